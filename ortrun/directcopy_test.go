package ortrun

import (
	"slices"
	"strings"
	"testing"
)

// TestDirectCopyFallsBack: when ONNX Runtime's CopyTensors cannot copy (here on the CPU,
// whose environment has no data transfer), the Copier turns direct copies off, says so, and
// copies through its sessions, with the same result. On CUDA the same path catches a failed
// registration or a first upload that does not read back equal.
func TestDirectCopyFallsBack(t *testing.T) {
	deviceTestLib(t)
	s := mustSession(t, doubleModel(t), Options{IntraOpThreads: 1})
	buf, err := s.NewBuffer(Float32, []int64{4})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	c := NewCopier(Options{Device: "cpu"})
	defer c.Close()
	c.directState = directProbe // as if registration had worked
	want := []float32{1, -2, 3.5, 1e-30}
	if err := c.Upload(buf, &Tensor{DType: Float32, Shape: []int64{4}, Data: want}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.Note(), "CopyTensors failed") || c.directState != directOff {
		t.Errorf("after a failed CopyTensors: state %d, note %q", c.directState, c.Note())
	}
	got, err := c.Download(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Data.([]float32), want) {
		t.Errorf("round trip %v, want %v", got.Data, want)
	}
	if c.Sessions() != 1 {
		t.Errorf("%d copy sessions, want 1", c.Sessions())
	}
}
