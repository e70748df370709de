package train

import (
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
)

// TestBnb4DeviceCheck: an NF4/FP4 base with float16 activations is refused on the CPU (ONNX
// Runtime's CPU MatMulBnb4 is float32-only) and accepted on CUDA; float32 and int4 bases are
// accepted everywhere.
func TestBnb4DeviceCheck(t *testing.T) {
	for _, c := range []struct {
		quant, precision, device string
		refused                  bool
	}{
		{"nf4", "float16", "cpu", true},
		{"fp4", "float16", "", true},
		{"nf4", "float16", "cuda:1", false},
		{"nf4", "float", "cpu", false},
		{"int4", "float16", "cpu", false},
		{"", "float16", "cpu", false},
	} {
		man := &manifest.Manifest{QuantType: c.quant, Model: manifest.Model{Precision: c.precision}}
		err := checkBnb4Device(man, c.device)
		if (err != nil) != c.refused || (err != nil && !strings.Contains(err.Error(), "--device cuda")) {
			t.Errorf("%+v: err = %v", c, err)
		}
	}
}
