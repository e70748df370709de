package manifest

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/safetensors"
)

// AdapterValues checks the LoRA tensors of a safetensors file read from path against the
// manifest, the same way wherever an adapter is read (train --init-adapter, eval, export):
// every tensor the artifacts train is present, 2-D with their exact shape (not only their
// element count: a transposed lora_A has the same count), and finite; no other tensor is
// there. It returns the values by PEFT name.
func (m *Manifest) AdapterValues(path string, f *safetensors.File) (map[string][]float32, error) {
	out := make(map[string][]float32, len(m.Params))
	for _, p := range m.Params {
		t, ok := f.Get(p.Name)
		if !ok {
			return nil, fmt.Errorf("%s: no tensor %q: the adapter does not adapt %s, which the artifacts train: pass an adapter trained on these artifacts", path,
				p.Name, p.Module)
		}
		if len(t.Shape) != 2 || t.Shape[0] != p.Shape[0] || t.Shape[1] != p.Shape[1] {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, the artifacts want %v", path, p.Name, t.Shape, p.Shape)
		}
		v, err := t.Float32s()
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", path, p.Name, err)
		}
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("%s: tensor %q holds %v at element %d: the adapter is damaged (a diverged run?)", path, p.Name, x, i)
			}
		}
		out[p.Name] = v
	}
	for _, t := range f.Tensors {
		if _, ok := out[t.Name]; !ok {
			return nil, fmt.Errorf("%s: tensor %q is not one of the artifacts' LoRA tensors: pass an adapter trained on these artifacts", path, t.Name)
		}
	}
	return out, nil
}

// peftConfig is the part of PEFT's LoraConfig that decides whether an adapter fits given
// artifacts.
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

// CheckAdapterConfig compares a PEFT adapter_config.json with the artifacts' LoRA options,
// the same way wherever an adapter is read: LoRA type (DoRA, rsLoRA, fan_in_fan_out and
// biases refused: ortq computes plain LoRA, scale α/r), r, α and target modules.
func (m *Manifest) CheckAdapterConfig(path string) error {
	man := m
	b, err := fsutil.ReadLimited(path, "adapter_config.json", 16<<20)
	if err != nil {
		return err
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
		return fmt.Errorf("%s: peft_type %q: ortq reads only LORA adapters", path, c.PeftType)
	case c.UseRSLoRA || c.UseDoRA || c.FanInFanOut || (c.Bias != "" && c.Bias != "none"):
		return fmt.Errorf("%s: use_rslora, use_dora, fan_in_fan_out or a bias other than \"none\": ortq trains plain LoRA (scale alpha/r, no bias)", path)
	case c.R != r:
		return fmt.Errorf("%s: r %d, the artifacts were prepared with --lora-r %d: prepare them with --lora-r %d", path, c.R, r, c.R)
	case c.LoraAlpha != alpha:
		return fmt.Errorf("%s: lora_alpha %g, the artifacts were prepared with --lora-alpha %g: prepare them with --lora-alpha %g", path, c.LoraAlpha, alpha,
			c.LoraAlpha)
	case !sameStringSet(targets, want):
		return fmt.Errorf("%s: target_modules %s, the artifacts were prepared with --targets %s: prepare them with --targets %s", path,
			strings.Join(sortedStrings(targets), ","), strings.Join(want, ","), strings.Join(sortedStrings(targets), ","))
	}
	return nil
}

// manifestLoRA reads lora_r and lora_alpha from the manifest's prepare options.
func manifestLoRA(man *Manifest) (r int, alpha float64) {
	if o, ok := man.Options.(map[string]any); ok {
		if v, ok := o["lora_r"].(float64); ok {
			r = int(v)
		}
		alpha, _ = o["lora_alpha"].(float64)
	}
	return r, alpha
}

// manifestTargets are the Linear kinds the artifacts adapt, sorted.
func manifestTargets(man *Manifest) []string {
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
