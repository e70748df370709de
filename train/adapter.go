package train

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/manifest"
)

// adapterConfig is the subset of PEFT's LoraConfig that loading an adapter needs.
type adapterConfig struct {
	PeftType      string   `json:"peft_type"`
	TaskType      string   `json:"task_type"`
	R             int      `json:"r"`
	LoraAlpha     float64  `json:"lora_alpha"`
	LoraDropout   float64  `json:"lora_dropout"`
	TargetModules []string `json:"target_modules"`
	Bias          string   `json:"bias"`
	BaseModel     string   `json:"base_model_name_or_path"`
	InferenceMode bool     `json:"inference_mode"`
}

// baseModelKey is the manifest option prepare records the user's model under
// (prepare.Options.BaseModel).
const baseModelKey = "base_model_name_or_path"

// BaseModelOf is the base_model_name_or_path prepare records for the --model the user gave:
// override when set (a hub id, say), else the model path made absolute (a checkpoint
// directory, where PEFT's AutoPeftModelForCausalLM finds config.json, or an .onnx file);
// "" for the embedded default model, which has no path of its own.
func BaseModelOf(model, override string) string {
	if override != "" {
		return override
	}
	if model == "" || model == "default" {
		return ""
	}
	if _, err := os.Stat(model); err != nil {
		return model
	}
	if abs, err := filepath.Abs(model); err == nil {
		return abs
	}
	return model
}

// SetBaseModelName makes adapters saved for man name base as their base model (train's
// --base-model-name); "" keeps what prepare recorded.
func SetBaseModelName(man *manifest.Manifest, base string) {
	if base == "" {
		return
	}
	o, ok := man.Options.(map[string]any)
	if !ok {
		o = map[string]any{}
		man.Options = o
	}
	o[baseModelKey] = base
}

// BaseModelName is the base_model_name_or_path of adapters trained on man: the model the
// user gave prepare (or a --base-model-name), else — for artifacts prepared before prepare
// recorded it — the source graph's path.
func BaseModelName(man *manifest.Manifest) string {
	if o, ok := man.Options.(map[string]any); ok {
		if s, ok := o[baseModelKey].(string); ok && s != "" {
			return s
		}
	}
	return man.Source.Path
}

func writeAdapterConfig(path string, man *manifest.Manifest) error {
	c := adapterConfig{PeftType: "LORA", TaskType: "CAUSAL_LM", Bias: "none", InferenceMode: true, BaseModel: BaseModelName(man)}
	if o, ok := man.Options.(map[string]any); ok {
		if v, ok := o["lora_r"].(float64); ok {
			c.R = int(v)
		}
		c.LoraAlpha, _ = o["lora_alpha"].(float64)
		c.LoraDropout, _ = o["lora_dropout"].(float64)
		if ts, ok := o["targets"].([]any); ok {
			for _, t := range ts {
				if s, ok := t.(string); ok {
					c.TargetModules = append(c.TargetModules, s)
				}
			}
		}
	}
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(c)
	})
}
