package passes

import (
	"testing"

	"github.com/ortq/ortq/manifest"
)

// TestRole: every value the passes name has its manifest role, LoRA tensors and gradients
// carry their PEFT name, state vectors their state, and other names are "other".
func TestRole(t *testing.T) {
	lora := "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
	for _, c := range []struct {
		name        string
		input       bool
		role, param string
	}{
		{"input_ids", true, manifest.RoleInputIDs, ""},
		{LabelsInput, true, manifest.RoleLabels, ""},
		{DropoutRowsInput, true, manifest.RoleDropoutRows, ""},
		{StepScalarsInput, true, manifest.RoleStepScalars, ""},
		{LossSumOutput, false, manifest.RoleLossSum, ""},
		{lora, true, manifest.RoleLoRA, lora},
		{lora, false, "other", ""},
		{GradName(lora), false, manifest.RoleGrad, lora},
		{StateInput(manifest.StateExpAvg), true, manifest.RoleState, manifest.StateExpAvg},
		{StateOutput(manifest.StateStats), false, manifest.RoleStateNext, manifest.StateStats},
		{"logits", false, "other", ""},
	} {
		if r, p := Role(c.name, c.input); r != c.role || p != c.param {
			t.Errorf("Role(%q, %v) = %q, %q; want %q, %q", c.name, c.input, r, p, c.role, c.param)
		}
	}
}
