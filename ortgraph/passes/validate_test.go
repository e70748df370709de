package passes_test

import (
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
)

// TestPassDeclarations: every pass has a name, a Doc and a Run, the names are unique and
// Requires has no cycle (what RunPasses checks before it runs anything).
func TestPassDeclarations(t *testing.T) {
	if err := ortgraph.Validate(passes.FindLinears, passes.Quantize, passes.HalfSoftmax, passes.RMSNorm, passes.DQForward,
		passes.LoRA, passes.Loss, passes.Backward, passes.Recompute, passes.ORTCompat, passes.DeviceStep); err != nil {
		t.Fatal(err)
	}
}
