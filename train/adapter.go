package train

import (
	"bufio"
	"encoding/json"
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

func writeAdapterConfig(path string, man *manifest.Manifest) error {
	c := adapterConfig{PeftType: "LORA", TaskType: "CAUSAL_LM", Bias: "none", InferenceMode: true, BaseModel: man.Source.Path}
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
