package manifest

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ortq/ortq/internal/safetensors"
)

// fuzzManifest adapts one module at r 2 (A [2, 3], B [4, 2]), α 4.
func fuzzManifest() *Manifest {
	mod := "base_model.model.model.layers.0.self_attn.q_proj"
	return &Manifest{
		Options: map[string]any{"lora_r": 2.0, "lora_alpha": 4.0},
		Params: []LoRAParam{{Name: mod + ".lora_A.weight", Module: mod, Kind: "A", Shape: []int64{2, 3}},
			{Name: mod + ".lora_B.weight", Module: mod, Kind: "B", Shape: []int64{4, 2}}},
	}
}

// FuzzAdapter: the adapter readers (adapter_model.safetensors through AdapterValues,
// adapter_config.json through CheckAdapterConfig) never panic, and what AdapterValues
// accepts has exactly the manifest's tensors, shapes and finite values.
func FuzzAdapter(f *testing.F) {
	m := fuzzManifest()
	dir := f.TempDir()
	p := filepath.Join(dir, "a.safetensors")
	ts := []safetensors.Tensor{safetensors.F32Tensor(m.Params[0].Name, []int64{2, 3}, make([]float32, 6)),
		safetensors.F32Tensor(m.Params[1].Name, []int64{4, 2}, make([]float32, 8))}
	if err := safetensors.Write(p, ts, nil); err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(p)
	cfg := []byte(`{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"]}`)
	f.Add(good, cfg)
	f.Add(good[:len(good)-4], []byte(`{"r":2,"lora_alpha":4,"target_modules":"all-linear"}`))
	f.Add(good, []byte(`{"peft_type":"LORA","r":2,"lora_alpha":4,"use_dora":true,"target_modules":["q_proj"]}`))
	f.Fuzz(func(t *testing.T, st, cfg []byte) {
		if sf, err := safetensors.Parse(st); err == nil {
			if v, err := m.AdapterValues("a.safetensors", sf); err == nil {
				if len(v) != len(m.Params) || len(sf.Tensors) != len(m.Params) {
					t.Fatalf("accepted %d tensors", len(sf.Tensors))
				}
				for _, p := range m.Params {
					if int64(len(v[p.Name])) != p.Shape[0]*p.Shape[1] {
						t.Fatalf("%s: %d values for %v", p.Name, len(v[p.Name]), p.Shape)
					}
					for _, x := range v[p.Name] {
						if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
							t.Fatalf("%s: accepted %v", p.Name, x)
						}
					}
				}
			}
		}
		cp := filepath.Join(t.TempDir(), "adapter_config.json")
		os.WriteFile(cp, cfg, 0o644)
		m.CheckAdapterConfig(cp)
	})
}

// TestTamperedManifest (issue 26 minor): ReadManifest refuses a lora_init outside the
// artifacts directory and a LoRA rank of 0, naming the field.
func TestTamperedManifest(t *testing.T) {
	for _, c := range []struct{ edit, want string }{
		{`"lora_init":"../other/lora_init.safetensors"`, "lora_init"},
		{`"lora_init":"/etc/passwd"`, "lora_init"},
		{`"options":{"lora_r":0,"lora_alpha":16}`, "options.lora_r"},
	} {
		dir := t.TempDir()
		b := `{"format":` + strconv.Itoa(FormatVersion) + `,"lora_init":"lora_init.safetensors","options":{"lora_r":8,"lora_alpha":16},` + c.edit + `}`
		os.WriteFile(filepath.Join(dir, ManifestFile), []byte(b), 0o644)
		if _, err := ReadManifest(dir); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a refusal naming %s", c.edit, err, c.want)
		}
	}
}
