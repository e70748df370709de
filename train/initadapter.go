package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
)

// peftConfig is the part of PEFT's LoraConfig that decides whether an adapter can start
// training on given artifacts.
type peftConfig struct {
	PeftType      string          `json:"peft_type"`
	R             int             `json:"r"`
	LoraAlpha     float64         `json:"lora_alpha"`
	TargetModules json.RawMessage `json:"target_modules"`
	UseRSLoRA     bool            `json:"use_rslora"`
	UseDoRA       bool            `json:"use_dora"`
	FanInFanOut   bool            `json:"fan_in_fan_out"`
	Bias          string          `json:"bias"`
}

// LoadInitAdapter reads a PEFT adapter directory (adapter_config.json and
// adapter_model.safetensors, as PEFT's save_pretrained and ortq train write them) for
// `train --init-adapter` and checks it against the artifacts: LoRA type, r, α, target
// modules, and every LoRA tensor's name and shape, with nothing left over. It returns the
// values by PEFT name, as float32. An error names the file and the mismatch.
func LoadInitAdapter(dir string, man *manifest.Manifest) (map[string][]float32, error) {
	cfgPath := filepath.Join(dir, "adapter_config.json")
	wPath := filepath.Join(dir, "adapter_model.safetensors")
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("--init-adapter: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("--init-adapter %q: pass the PEFT adapter directory (adapter_config.json + adapter_model.safetensors)", dir)
	}
	if err := checkPEFTConfig(cfgPath, man); err != nil {
		return nil, err
	}
	f, err := safetensors.ReadFile(wPath)
	if err != nil {
		return nil, fmt.Errorf("--init-adapter: %w", err)
	}
	out := map[string][]float32{}
	for _, p := range man.Params {
		t, ok := f.Get(p.Name)
		if !ok {
			return nil, fmt.Errorf("%s: no tensor %q: the adapter does not adapt %s, which the artifacts train", wPath, p.Name, p.Module)
		}
		if len(t.Shape) != 2 || t.Shape[0] != p.Shape[0] || t.Shape[1] != p.Shape[1] {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, the artifacts want %v", wPath, p.Name, t.Shape, p.Shape)
		}
		v, err := t.Float32s()
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", wPath, p.Name, err)
		}
		out[p.Name] = v
	}
	for _, t := range f.Tensors {
		if _, ok := out[t.Name]; !ok {
			return nil, fmt.Errorf("%s: tensor %q is not one of the artifacts' LoRA tensors (their targets: %s): prepare with the adapter's target modules", wPath, t.Name, strings.Join(manifestTargets(man), ","))
		}
	}
	return out, nil
}

// LoadInitParams is LoadInitAdapter's values as Params in the manifest's order.
func LoadInitParams(dir string, man *manifest.Manifest) ([]Param, error) {
	v, err := LoadInitAdapter(dir, man)
	if err != nil {
		return nil, err
	}
	ps := make([]Param, 0, len(man.Params))
	for _, p := range man.Params {
		ps = append(ps, Param{Name: p.Name, Data: v[p.Name]})
	}
	return ps, nil
}

// checkPEFTConfig compares adapter_config.json with the artifacts' LoRA options.
func checkPEFTConfig(path string, man *manifest.Manifest) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--init-adapter: %w", err)
	}
	var c peftConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("%s: not a PEFT adapter config: %w", path, err)
	}
	r, alpha := manifestLoRA(man)
	var targets []string
	if err := json.Unmarshal(c.TargetModules, &targets); err != nil {
		return fmt.Errorf("%s: target_modules %s: list the module names (ortq does not match patterns)", path, string(c.TargetModules))
	}
	want := manifestTargets(man)
	switch {
	case c.PeftType != "" && c.PeftType != "LORA":
		return fmt.Errorf("%s: peft_type %q: only LORA adapters can start ortq training", path, c.PeftType)
	case c.UseRSLoRA || c.UseDoRA || c.FanInFanOut || (c.Bias != "" && c.Bias != "none"):
		return fmt.Errorf("%s: use_rslora, use_dora, fan_in_fan_out or a bias other than \"none\": ortq trains plain LoRA (scale alpha/r, no bias)", path)
	case c.R != r:
		return fmt.Errorf("%s: r %d, the artifacts were prepared with --lora-r %d: prepare them with --lora-r %d", path, c.R, r, c.R)
	case c.LoraAlpha != alpha:
		return fmt.Errorf("%s: lora_alpha %g, the artifacts were prepared with --lora-alpha %g: prepare them with --lora-alpha %g", path, c.LoraAlpha, alpha, c.LoraAlpha)
	case !sameStringSet(targets, want):
		return fmt.Errorf("%s: target_modules %s, the artifacts were prepared with --targets %s: prepare them with --targets %s", path, strings.Join(sortedStrings(targets), ","), strings.Join(want, ","), strings.Join(sortedStrings(targets), ","))
	}
	return nil
}

// manifestLoRA reads lora_r and lora_alpha from the manifest's prepare options.
func manifestLoRA(man *manifest.Manifest) (r int, alpha float64) {
	if o, ok := man.Options.(map[string]any); ok {
		if v, ok := o["lora_r"].(float64); ok {
			r = int(v)
		}
		alpha, _ = o["lora_alpha"].(float64)
	}
	return r, alpha
}

// manifestTargets are the Linear kinds the artifacts adapt, sorted.
func manifestTargets(man *manifest.Manifest) []string {
	seen := map[string]bool{}
	for _, p := range man.Params {
		seen[p.Module[strings.LastIndex(p.Module, ".")+1:]] = true
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	return sortedStrings(out)
}

func sortedStrings(v []string) []string {
	v = append([]string(nil), v...)
	sort.Strings(v)
	return v
}

func sameStringSet(a, b []string) bool {
	a, b = sortedStrings(a), sortedStrings(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
