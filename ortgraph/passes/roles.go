package passes

import (
	"strings"

	"github.com/ortq/ortq/manifest"
)

// Role is the manifest role (and, for LoRA tensors, gradients and state vectors, the
// parameter or state it belongs to) of a graph input or output the passes create or keep.
// The passes name these values, so they are the ones to say what each is for: prepare
// records the roles in manifest.json and the trainer feeds and reads graphs by role, never by
// name. Names no pass gives are "other".
func Role(name string, isInput bool) (role, param string) {
	switch name {
	case "input_ids":
		return manifest.RoleInputIDs, ""
	case "attention_mask":
		return manifest.RoleAttentionMask, ""
	case "position_ids":
		return manifest.RolePositionIDs, ""
	case LabelsInput:
		return manifest.RoleLabels, ""
	case LossScaleInput:
		return manifest.RoleLossScale, ""
	case DropoutSeedInput:
		return manifest.RoleDropoutSeed, ""
	case DropoutRowsInput:
		return manifest.RoleDropoutRows, ""
	case LossOutput:
		return manifest.RoleLoss, ""
	case LossSumOutput:
		return manifest.RoleLossSum, ""
	case TokenCountOutput:
		return manifest.RoleTokenCount, ""
	case StepScalarsInput:
		return manifest.RoleStepScalars, ""
	}
	switch {
	case strings.HasPrefix(name, "grad."):
		return manifest.RoleGrad, strings.TrimPrefix(name, "grad.")
	case isInput && strings.Contains(name, ".lora_"):
		return manifest.RoleLoRA, name
	}
	if r, state, ok := StateRole(name); ok {
		return r, state
	}
	return "other", ""
}
