package prepare_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
)

// TestWeightsStoredOnce: every graph of an artifacts directory reads its weights from one
// weights.bin, and each 4-bit weight is stored once — MatMulNBits' uint8 view (evaluation
// graph) and DequantizeLinear's UINT4 view (training graphs) point at the same bytes.
func TestWeightsStoredOnce(t *testing.T) {
	c := refCases(t)[0]
	dir := prepareFor(t, filepath.Join(fixtures, c.variant, "model.onnx"), c.targets, 4)
	type ref struct{ loc, off, length string }
	refs := map[string]ref{}
	var total int64
	for _, f := range []string{manifest.TrainFile, manifest.TrainRecomputeFile, manifest.EvalFile} {
		m, err := ortgraph.Load(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, init := range m.P.Graph.Initializer {
			if len(init.ExternalData) == 0 {
				continue
			}
			var r ref
			for _, kv := range init.ExternalData {
				switch kv.Key {
				case "location":
					r.loc = kv.Value
				case "offset":
					r.off = kv.Value
				case "length":
					r.length = kv.Value
				}
			}
			if r.loc != manifest.WeightsFile {
				t.Errorf("%s: %s reads %q, not %s", f, init.Name, r.loc, manifest.WeightsFile)
			}
			if prev, ok := refs[init.Name]; ok && prev != r {
				t.Errorf("%s is stored twice: %v and %v", init.Name, prev, r)
			}
			refs[init.Name] = r
		}
	}
	shared := 0
	for name, r := range refs {
		if strings.HasSuffix(name, "_uint4") {
			base := refs[strings.TrimSuffix(name, "_uint4")]
			if base != r {
				t.Errorf("4-bit weight %s and its UINT4 view are stored apart: %v vs %v", name, base, r)
			}
			shared++
		}
	}
	if shared == 0 {
		t.Fatal("no UINT4 views found: the training graph should dequantize the stored 4-bit bytes")
	}
	st, err := os.Stat(filepath.Join(dir, manifest.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	total = st.Size()
	t.Logf("%d external initializers, %d 4-bit weights shared by MatMulNBits and DequantizeLinear, weights.bin %d bytes", len(refs), shared, total)
}
