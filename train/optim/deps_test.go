package optim

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoONNXRuntime: optim's dependencies (go list -deps) include neither ONNX Runtime's
// binding nor ortq's runtime package.
func TestNoONNXRuntime(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "onnxruntime") || strings.HasSuffix(dep, "/ortq/ortrun") {
			t.Errorf("train/optim depends on %s", dep)
		}
	}
}
