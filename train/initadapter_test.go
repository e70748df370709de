package train

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
)

// TestLoadInitAdapter: a PEFT adapter matching the artifacts loads with its values; each
// kind of mismatch is refused in one line naming the file and what differs.
func TestLoadInitAdapter(t *testing.T) {
	man := &manifest.Manifest{
		Options: map[string]any{"lora_r": 2.0, "lora_alpha": 16.0, "targets": []any{"q_proj", "v_proj"}},
		Params: []manifest.LoRAParam{
			{Name: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", Module: "model.layers.0.self_attn.q_proj", Kind: "A", Shape: []int64{2, 4}},
			{Name: "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", Module: "model.layers.0.self_attn.q_proj", Kind: "B", Shape: []int64{4, 2}},
			{Name: "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", Module: "model.layers.0.self_attn.v_proj", Kind: "A", Shape: []int64{2, 4}},
			{Name: "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", Module: "model.layers.0.self_attn.v_proj", Kind: "B", Shape: []int64{3, 2}},
		},
	}
	goodCfg := map[string]any{"peft_type": "LORA", "r": 2, "lora_alpha": 16, "target_modules": []string{"v_proj", "q_proj"}, "bias": "none"}
	tensors := func(shapeOf func(p manifest.LoRAParam) []int64, extra bool, skip string) []safetensors.Tensor {
		var ts []safetensors.Tensor
		for i, p := range man.Params {
			if p.Name == skip {
				continue
			}
			sh := shapeOf(p)
			v := make([]float32, sh[0]*sh[1])
			for j := range v {
				v[j] = float32(i*100 + j)
			}
			ts = append(ts, safetensors.F16Tensor(p.Name, sh, v))
		}
		if extra {
			ts = append(ts, safetensors.F32Tensor("base_model.model.lm_head.lora_A.weight", []int64{2, 4}, make([]float32, 8)))
		}
		return ts
	}
	same := func(p manifest.LoRAParam) []int64 { return p.Shape }
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range goodCfg {
			c[kk] = vv
		}
		c[k] = v
		return c
	}
	for _, c := range []struct {
		name string
		cfg  map[string]any
		ts   []safetensors.Tensor
		want string // "" = loads
	}{
		{"matching (fp16 tensors)", goodCfg, tensors(same, false, ""), ""},
		{"rank", with("r", 4), tensors(same, false, ""), "adapter_config.json: r 4"},
		{"alpha", with("lora_alpha", 8), tensors(same, false, ""), "adapter_config.json: lora_alpha 8"},
		{"targets", with("target_modules", []string{"q_proj"}), tensors(same, false, ""), "adapter_config.json: target_modules q_proj"},
		{"target pattern", with("target_modules", "all-linear"), tensors(same, false, ""), "list the module names"},
		{"rslora", with("use_rslora", true), tensors(same, false, ""), "use_rslora"},
		{"not lora", with("peft_type", "IA3"), tensors(same, false, ""), "peft_type"},
		{"missing tensor", goodCfg, tensors(same, false, man.Params[3].Name), "adapter_model.safetensors: no tensor \"" + man.Params[3].Name},
		{"shape", goodCfg, tensors(func(p manifest.LoRAParam) []int64 { return []int64{p.Shape[1], p.Shape[0]} }, false, ""),
			"has shape [4 2], the artifacts want [2 4]"},
		{"extra tensor", goodCfg, tensors(same, true, ""), "lm_head.lora_A.weight\" is not one of"},
		{"no config", nil, tensors(same, false, ""), "adapter_config.json"},
	} {
		dir := filepath.Join(t.TempDir(), "peft")
		os.MkdirAll(dir, 0o755)
		if c.cfg != nil {
			b, _ := json.Marshal(c.cfg)
			os.WriteFile(filepath.Join(dir, "adapter_config.json"), b, 0o644)
		}
		if err := safetensors.Write(filepath.Join(dir, "adapter_model.safetensors"), c.ts, nil); err != nil {
			t.Fatal(err)
		}
		got, err := LoadInitAdapter(dir, man)
		if c.want == "" {
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if v := got[man.Params[3].Name]; len(v) != 6 || v[5] != 305 {
				t.Errorf("%s: values %v", c.name, v)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line naming %s and %q", c.name, err, dir, c.want)
		}
	}
}
