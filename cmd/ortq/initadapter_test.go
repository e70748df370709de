package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/generate"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
)

// peftAdapterConfig is an adapter_config.json as PEFT's save_pretrained writes it for a
// LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"]).
const peftAdapterConfig = `{
  "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "some/llama",
  "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
  "layers_pattern": null, "layers_to_transform": null, "lora_alpha": 32, "lora_dropout": 0.1,
  "modules_to_save": null, "peft_type": "LORA", "r": 8, "rank_pattern": {}, "revision": null,
  "target_modules": ["v_proj", "q_proj"], "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false
}`

// TestInitAdapter: a PEFT adapter → train --init-adapter with a step too small to move a
// float32 weight (lr 1e-30: zero steps in effect; train refuses --max-steps 0) → the run's
// adapter holds the PEFT values bit for bit, and the exports of both give the same logits.
// A mismatching adapter is refused before the data is read, naming the file.
func TestInitAdapter(t *testing.T) {
	dir, args := relFixture(t, 1)
	art := args[2]
	man, err := manifest.ReadManifest(art)
	if err != nil {
		t.Fatal(err)
	}
	peft := filepath.Join(dir, "peft")
	os.MkdirAll(peft, 0o755)
	rng := rand.New(rand.NewPCG(5, 5))
	var ts []safetensors.Tensor
	want := map[string][]float32{}
	for _, p := range man.Params {
		v := make([]float32, p.Shape[0]*p.Shape[1])
		for i := range v {
			v[i] = float32(rng.NormFloat64()*0.05) + 0.01
		}
		want[p.Name] = v
		ts = append(ts, safetensors.F32Tensor(p.Name, p.Shape, v))
	}
	if err := safetensors.Write(filepath.Join(peft, "adapter_model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(peft, "adapter_config.json"), []byte(peftAdapterConfig), 0o644)

	out := filepath.Join(dir, "run")
	if err := run(t, with(setFlag(setFlag(args, "--lr", "1e-30"), "--weight-decay", "0"), "--out", out, "--init-adapter", peft)...); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.ReadFile(filepath.Join(out, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range man.Params {
		tt, _ := f.Get(p.Name)
		got, _ := tt.Float32s()
		for i := range got {
			if got[i] != want[p.Name][i] {
				t.Fatalf("%s[%d] = %g after the step, the PEFT adapter has %g", p.Name, i, got[i], want[p.Name][i])
			}
		}
	}
	a, b := exportLogits(t, art, filepath.Join(peft, "adapter_model.safetensors")), exportLogits(t, art, filepath.Join(out, "adapter_model.safetensors"))
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("logits %d and %d values", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("logit %d: %g (PEFT adapter) vs %g (after --init-adapter)", i, a[i], b[i])
		}
	}

	os.WriteFile(filepath.Join(peft, "adapter_config.json"), []byte(strings.Replace(peftAdapterConfig, `"r": 8`, `"r": 16`, 1)), 0o644)
	err = run(t, with(args, "--out", filepath.Join(dir, "run2"), "--init-adapter", peft)...)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(peft, "adapter_config.json")+": r 16") {
		t.Errorf("rank mismatch: %v", err)
	}
}

// exportLogits exports art with adapter and returns the logits of a short prompt.
func exportLogits(t *testing.T, art, adapter string) []float32 {
	t.Helper()
	out := filepath.Join(t.TempDir(), "export")
	if err := run(t, "export", "--artifacts", art, "--adapter", adapter, "--out", out, "--quiet"); err != nil {
		t.Fatal(err)
	}
	m, err := generate.Open(out, ortrun.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	logits, err := m.Forward(m.NewState(), []int64{1, 45, 310, 7, 1022})
	if err != nil {
		t.Fatal(err)
	}
	return logits
}
