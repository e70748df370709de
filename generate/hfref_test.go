package generate

import (
	"encoding/json"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/export/exporttest"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

var update = flag.Bool("update", false, "rewrite testdata/llama32-adapter, the ortq adapter the Hugging Face reference is made with")

// Files of the Hugging Face reference: the adapter (written by ortq, committed) and what
// scripts/hf_reference.py computes from it with transformers and PEFT.
const (
	refAdapterDir = "testdata/llama32-adapter"
	refFile       = "testdata/hf_reference.json"
	refCommand    = "python3 scripts/hf_reference.py (needs torch, transformers and peft; CPU is enough)"
)

// hfReference is testdata/hf_reference.json.
type hfReference struct {
	Prompt     []int64     `json:"prompt"`
	GreedyBase []int64     `json:"greedy_base"`
	GreedyLoRA []int64     `json:"greedy_lora"`
	LogitsBase [][]float32 `json:"logits_base"`
	LogitsLoRA [][]float32 `json:"logits_lora"`
}

// TestReferenceAdapter checks the committed ortq adapter still loads on the fp32 llama32
// artifacts; with -update it writes it (seeded random A and B, through train.SaveAdapter,
// so the files are what `ortq train` writes).
func TestReferenceAdapter(t *testing.T) {
	ortruntest.Lib(t)
	art := exporttest.Artifacts(t, "llama32-fp32")
	man, err := manifest.ReadManifest(art)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		rng := rand.New(rand.NewPCG(14, 14))
		var ps []optim.Param
		for _, p := range man.Params {
			v := make([]float32, p.Shape[0]*p.Shape[1])
			for i := range v {
				v[i] = float32(rng.NormFloat64() * 0.1)
			}
			ps = append(ps, optim.Param{Name: p.Name, Data: v})
		}
		train.SetBaseModelName(man, "hfimport/testdata/hf/llama32")
		os.MkdirAll(refAdapterDir, 0o755)
		if err := train.SaveAdapter(refAdapterDir, man, ps); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := export.LoadAdapter(filepath.Join(refAdapterDir, "adapter_model.safetensors"), man); err != nil {
		t.Fatal(err)
	}
}

// TestMatchesTransformers compares ortq's export and generate with Hugging Face on the
// llama32 checkpoint (float32 weights as they are): greedy ids for 64 new tokens equal
// transformers' model.generate(do_sample=False), with and without the ortq adapter loaded
// by PEFT, and the prompt's logits agree within 1e-4. The reference is made by
// scripts/hf_reference.py on a machine with torch; until it is committed the test skips
// (whatever ORTQ_REQUIRE_FIXTURES says), afterwards it always runs. The shared-KV-cache
// export (--kv-cache shared) is held to the same greedy ids; its logits are the eval
// graph's (export's TestKVCacheMatchesEval).
func TestMatchesTransformers(t *testing.T) {
	b, err := os.ReadFile(refFile)
	if os.IsNotExist(err) {
		t.Skipf("%s has not been generated yet: run %s and commit it", refFile, refCommand)
	} else if err != nil {
		t.Fatal(err)
	}
	var ref hfReference
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatalf("%s: %v", refFile, err)
	}
	ortruntest.Lib(t)
	art := exporttest.Artifacts(t, "llama32-fp32")
	for _, c := range []struct {
		name    string
		adapter string
		greedy  []int64
		logits  [][]float32
	}{
		{"base", "", ref.GreedyBase, ref.LogitsBase},
		{"lora", filepath.Join(refAdapterDir, "adapter_model.safetensors"), ref.GreedyLoRA, ref.LogitsLoRA},
	} {
		out := filepath.Join(t.TempDir(), "export")
		if _, err := export.Run(export.Options{Artifacts: art, Adapter: c.adapter, Out: out}); err != nil {
			t.Fatal(err)
		}
		m, err := Open(out, ortrun.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		logits, err := m.Forward(m.NewState(), ref.Prompt)
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
		checkGreedy(t, c.name, exportedGreedy(t, art, c.adapter, export.KVShared, ref.Prompt, len(c.greedy)), c.greedy)
		got := exportedGreedy(t, art, c.adapter, export.KVConcat, ref.Prompt, len(c.greedy))
		d := 0.0
		for i, row := range c.logits {
			for j, v := range row {
				d = math.Max(d, math.Abs(float64(v)-float64(logits[i*len(row)+j])))
			}
		}
		t.Logf("%s: max |Δlogit| vs transformers %.3g", c.name, d)
		if d > 1e-4 {
			t.Errorf("%s: max |Δlogit| %.3g > 1e-4", c.name, d)
		}
		checkGreedy(t, c.name, got, c.greedy)
	}
}

// exportedGreedy exports art (with adapter, "" for none) in the KV-cache layout kv and
// returns n greedy tokens after prompt.
func exportedGreedy(t *testing.T, art, adapter, kv string, prompt []int64, n int) []int64 {
	t.Helper()
	out := filepath.Join(t.TempDir(), "export-"+kv)
	if _, err := export.Run(export.Options{Artifacts: art, Adapter: adapter, Out: out, KVCache: kv}); err != nil {
		t.Fatal(err)
	}
	m, err := Open(out, ortrun.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, _ := NewSampler(0, 0, 1, 0)
	got, _, err := m.Generate(prompt, Options{MaxNewTokens: n, Sampler: s})
	if err != nil {
		t.Fatalf("%s: %v", kv, err)
	}
	return got
}

func checkGreedy(t *testing.T, name string, got, want []int64) {
	t.Helper()
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Fatalf("%s: greedy ids differ from transformers' at new token %d:\nortq %v\nhf   %v", name, i, got, want)
		}
	}
}
