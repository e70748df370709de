package hfimport_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// Checkpoints and references come from testdata/gen/make_hf_checkpoints.py (transformers
// save_pretrained; logits of a right-padded batch computed by transformers in float64).
const hfData = "testdata/hf"

var variants = []string{"llama2", "llama32", "linear_bias", "sharded", "bf16"}

type ref struct {
	ids, mask []int64
	b, s      int
	f         map[string][]float32
	shape     map[string][]int64
}

func loadRef(t *testing.T, variant string) *ref {
	t.Helper()
	f, err := safetensors.ReadFile(filepath.Join(hfData, variant, "ref.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	r := &ref{f: map[string][]float32{}, shape: map[string][]int64{}}
	for _, tt := range f.Tensors {
		r.shape[tt.Name] = tt.Shape
		if tt.DType == safetensors.I64 {
			v, _ := tt.Int64s()
			switch tt.Name {
			case "input_ids":
				r.ids = v
			case "attention_mask":
				r.mask = v
			case "labels":
				// rebuilt from the mask by the engine's batch
			}
			continue
		}
		v, err := tt.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		r.f[tt.Name] = v
	}
	r.b, r.s = int(r.shape["input_ids"][0]), int(r.shape["input_ids"][1])
	return r
}

func importVariant(t *testing.T, variant, dtype string) *hfimport.Result {
	t.Helper()
	return importOps(t, variant, dtype, "decomposed") // import's default ops
}

func runLogits(t *testing.T, model string, r *ref) *ortrun.Tensor {
	t.Helper()
	s, err := ortrun.NewSession(model, ortrun.Options{Device: "cpu", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	shape := []int64{int64(r.b), int64(r.s)}
	out, err := s.Run(map[string]*ortrun.Tensor{
		"input_ids":      {DType: ortrun.Int64, Shape: shape, Data: r.ids},
		"attention_mask": {DType: ortrun.Int64, Shape: shape, Data: r.mask},
	}, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	return out["logits"]
}

// TestImportMatchesTransformers: the imported fp32 graph's logits on the CPU EP are within
// 1e-4 (absolute) of transformers' at every unpadded position, for every variant.
func TestImportMatchesTransformers(t *testing.T) {
	ortruntest.Lib(t)
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			r := loadRef(t, v)
			res := importVariant(t, v, "float32")
			got := runLogits(t, res.Model, r).Data.([]float32)
			vocab := int(r.shape["logits"][2])
			for _, name := range []string{"logits", "logits_fp32"} {
				want := r.f[name]
				if len(got) != len(want) {
					t.Fatalf("logits have %d values, reference %d", len(got), len(want))
				}
				worst, scale := 0.0, 0.0
				for i := 0; i < r.b*r.s; i++ {
					if r.mask[i] == 0 {
						continue
					}
					for j := 0; j < vocab; j++ {
						k := i*vocab + j
						worst = math.Max(worst, math.Abs(float64(got[k])-float64(want[k])))
						scale = math.Max(scale, math.Abs(float64(want[k])))
					}
				}
				if worst > 1e-4 || math.IsNaN(worst) {
					t.Errorf("%s: max abs diff %.3g > 1e-4 (max |logit| %.3g)", name, worst, scale)
				}
				t.Logf("vs transformers %s: max abs diff %.2g (max |logit| %.2g)", name, worst, scale)
			}
		})
	}
}

// TestImportFloat16 runs the fp16 graph, decomposed and fused, on the CPU EP: it must be
// close to the fp32 logits (fp16 rounding of weights and activations only).
func TestImportFloat16(t *testing.T) {
	ortruntest.Lib(t)
	r := loadRef(t, "llama32")
	for _, ops := range []string{"decomposed", "fused"} {
		out := runLogits(t, importOps(t, "llama32", "float16", ops).Model, r)
		if out.DType != ortrun.Float16 {
			t.Fatalf("%s: logits dtype %v, want float16", ops, out.DType)
		}
		h := out.Data.([]uint16)
		want := r.f["logits"]
		vocab := int(r.shape["logits"][2])
		worst := 0.0
		for i := 0; i < r.b*r.s; i++ {
			if r.mask[i] == 0 {
				continue
			}
			for j := 0; j < vocab; j++ {
				k := i*vocab + j
				worst = math.Max(worst, math.Abs(float64(ortgraph.HalfToFloat(h[k]))-float64(want[k])))
			}
		}
		if worst > 5e-3 || math.IsNaN(worst) {
			t.Errorf("%s fp16 logits: max abs diff %.3g vs fp32 reference > 5e-3", ops, worst)
		}
		t.Logf("%s fp16 vs transformers fp64: max abs diff %.2g", ops, worst)
	}
}

// TestGraphStructure: every value has a recorded type, Linears are found by name with HF
// module paths, weights keep HF names, the tied head reads the embedding.
func TestGraphStructure(t *testing.T) {
	for _, v := range []string{"llama32", "linear_bias"} {
		t.Run(v, func(t *testing.T) {
			res := importVariant(t, v, "float32")
			m, err := ortgraph.Load(res.Model)
			if err != nil {
				t.Fatal(err)
			}
			g := ortgraph.NewGraph(m)
			if m.OpsetVersion("") != 21 {
				t.Errorf("opset %d, want 21", m.OpsetVersion(""))
			}
			for _, n := range g.P.Node {
				if n.Domain != "" {
					t.Errorf("node %s: domain %q, want the default domain", n.Name, n.Domain)
				}
				for _, o := range n.Output {
					if g.Rank(o) < 0 || g.ElemType(o) == 0 {
						t.Errorf("node %s output %s has no recorded type/rank", n.Name, o)
					}
				}
			}
			ctx, err := ortgraph.RunPasses(g, nil, nil, passes.FindLinears)
			if err != nil {
				t.Fatal(err)
			}
			ls := ctx.Result(passes.FindLinears).(*passes.Linears)
			if ls.Layers != 2 || len(ls.All) != 2*7+1 {
				t.Fatalf("found %d layers, %d Linears; want 2 layers, 15 Linears", ls.Layers, len(ls.All))
			}
			for _, l := range ls.All {
				if l.Source != "name" {
					t.Errorf("%s found by %s, want by name", l.Module(), l.Source)
				}
				if l.Kind != "lm_head" && l.Weight != l.Module()+".weight" {
					t.Errorf("%s: weight %q, want %q", l.Module(), l.Weight, l.Module()+".weight")
				}
			}
			head := ls.Get(-1, "lm_head")
			cfg, _ := hfimport.LoadConfig(filepath.Join(hfData, v, "config.json"))
			if cfg.TieWordEmbeddings != (head.Weight == "model.embed_tokens.weight" && head.WeightIsOutIn) {
				t.Errorf("lm_head weight %q (out-in %v) with tie_word_embeddings=%v", head.Weight, head.WeightIsOutIn, cfg.TieWordEmbeddings)
			}
			if q := ls.Get(0, "q_proj"); q.In != int64(cfg.HiddenSize) || q.Out != int64(cfg.NumHeads*cfg.HeadDim) {
				t.Errorf("q_proj %d→%d, want %d→%d", q.In, q.Out, cfg.HiddenSize, cfg.NumHeads*cfg.HeadDim)
			}
		})
	}
}

// TestImportThenPrepare: imported graphs go through prepare (16-bit and 4-bit bases).
func TestImportThenPrepare(t *testing.T) {
	for _, v := range []string{"llama32", "linear_bias"} {
		for _, bits := range []int{16, 4} {
			res := importVariant(t, v, "float32")
			o := prepare.DefaultOptions()
			o.Model, o.Out, o.Targets, o.Bits, o.Dropout = res.Model, filepath.Join(t.TempDir(), "art"), []string{"q_proj", "v_proj"}, bits, 0
			pr, err := prepare.Run(o, t.Logf)
			if err != nil {
				t.Fatalf("%s bits %d: prepare: %v", v, bits, err)
			}
			if pr.Manifest.Model.Layers != 2 || len(pr.Manifest.Params) != 2*2*2 {
				t.Errorf("%s bits %d: manifest has %d layers, %d LoRA tensors", v, bits, pr.Manifest.Model.Layers, len(pr.Manifest.Params))
			}
		}
	}
}

// TestGradientsMatchPEFT (bonus): after prepare, the LoRA gradients of the summed loss
// equal PEFT's (transformers float64 reference) on the padded batch.
func TestGradientsMatchPEFT(t *testing.T) {
	ortruntest.Lib(t)
	r := loadRef(t, "llama32")
	res := importVariant(t, "llama32", "float32")
	o := prepare.DefaultOptions()
	o.Model, o.Out, o.Targets, o.Bits, o.Dropout, o.Rank, o.Alpha = res.Model, filepath.Join(t.TempDir(), "art"), []string{"q_proj", "v_proj"}, 16, 0, 4, 8
	if _, err := prepare.Run(o, t.Logf); err != nil {
		t.Fatal(err)
	}
	eng, err := train.OpenEngine(o.Out, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	labels := make([]int64, len(r.ids))
	for i, id := range r.ids {
		labels[i] = id
		if r.mask[i] == 0 {
			labels[i] = -100
		}
	}
	batch := data.Batch{Rows: r.b, SeqLen: r.s, InputIDs: r.ids, AttentionMask: r.mask, Labels: labels}
	params := map[string][]float32{}
	for _, p := range eng.Man.Params {
		v, ok := r.f[p.Name]
		if !ok {
			t.Fatalf("reference lacks %s", p.Name)
		}
		params[p.Name] = append([]float32(nil), v...)
	}
	st, err := eng.Step(batch, params, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := float64(r.f["loss_sum"][0]); math.Abs(st.LossSum-want) > 1e-4*math.Abs(want) {
		t.Errorf("loss_sum %.7g, PEFT %.7g", st.LossSum, want)
	}
	worst := 0.0
	for _, p := range eng.Man.Params {
		got, want := st.Grads[p.Name], r.f[p.Name+".grad"]
		var num, den float64
		for i := range want {
			num = math.Max(num, math.Abs(float64(got[i])-float64(want[i])))
			den = math.Max(den, math.Abs(float64(want[i])))
		}
		e := num / den
		worst = math.Max(worst, e)
		if e > 1e-4 || math.IsNaN(e) {
			t.Errorf("gradient of %s: rel err %.3g > 1e-4", p.Name, e)
		}
	}
	t.Logf("loss_sum %.6f vs PEFT %.6f; worst gradient rel err %.2g over %d tensors", st.LossSum, r.f["loss_sum"][0], worst, len(eng.Man.Params))
}

// TestSynthTiny: the tiny preset is written, runs, is deterministic per seed whatever the
// worker count, and goes through prepare.
func TestSynthTiny(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, seed uint64, workers int) *hfimport.Result {
		res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: seed, Common: hfimport.Common{Out: filepath.Join(dir, name), Workers: workers}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b, c := mk("a", 7, 1), mk("b", 7, 3), mk("c", 8, 2)
	read := func(r *hfimport.Result) []byte {
		d, err := os.ReadFile(filepath.Join(r.Dir, hfimport.DataFile))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if !bytes.Equal(read(a), read(b)) {
		t.Error("same seed, different worker counts: different weights")
	}
	if bytes.Equal(read(a), read(c)) {
		t.Error("different seeds gave the same weights")
	}
	cfg, err := hfimport.LoadConfig(filepath.Join(a.Dir, "config.json"))
	if err != nil {
		t.Fatalf("synth's config.json does not load back: %v", err)
	}
	if cfg.Params() != a.Params {
		t.Errorf("config params %d, written %d", cfg.Params(), a.Params)
	}
	// HF init: Linear weights N(0, 0.02), norms 1.
	m, err := ortgraph.Load(a.Model)
	if err != nil {
		t.Fatal(err)
	}
	g := ortgraph.NewGraph(m)
	w, err := m.Floats(g.Initializer("model.layers.1.mlp.down_proj.weight"))
	if err != nil {
		t.Fatal(err)
	}
	var sum, sq float64
	for _, x := range w {
		sum += float64(x)
		sq += float64(x) * float64(x)
	}
	mean := sum / float64(len(w))
	std := math.Sqrt(sq/float64(len(w)) - mean*mean)
	if math.Abs(mean) > 1e-3 || math.Abs(std-0.02) > 1e-3 {
		t.Errorf("down_proj weights: mean %.3g std %.3g, want N(0, 0.02)", mean, std)
	}
	if n, err := m.Floats(g.Initializer("model.norm.weight")); err != nil || n[0] != 1 || n[len(n)-1] != 1 {
		t.Errorf("model.norm.weight = %v (%v), want ones", n, err)
	}
	ortruntest.Lib(t)
	r := &ref{b: 2, s: 5, ids: []int64{1, 2, 3, 4, 5, 6, 7, 8, 0, 0}, mask: []int64{1, 1, 1, 1, 1, 1, 1, 1, 0, 0}}
	out := runLogits(t, a.Model, r)
	if want := []int64{2, 5, int64(cfg.VocabSize)}; !slices.Equal(out.Shape, want) {
		t.Fatalf("logits shape %v, want %v", out.Shape, want)
	}
	for _, x := range out.Data.([]float32) {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatal("non-finite logits")
		}
	}
	// Without the config.json beside it, the context length still reaches the manifest
	// (from the graph's metadata), so train can refuse a --max-seq-len beyond it.
	if err := os.Remove(filepath.Join(a.Dir, "config.json")); err != nil {
		t.Fatal(err)
	}
	o := prepare.DefaultOptions()
	o.Model, o.Out, o.Targets, o.Bits, o.Dropout = a.Model, filepath.Join(dir, "art"), []string{"q_proj", "v_proj"}, 16, 0
	res, err := prepare.Run(o, t.Logf)
	if err != nil {
		t.Fatalf("prepare of synth tiny: %v", err)
	}
	if got := res.Manifest.Model.MaxPositions; got != cfg.MaxPositions || got <= 0 {
		t.Errorf("manifest max_positions %d without config.json, want %d from the graph metadata", got, cfg.MaxPositions)
	}
}

// copyDir copies a test checkpoint so a case can damage it.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "ck")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func editConfig(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ = json.Marshal(m)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBadInput: one-line errors naming the file and tensor; nothing written; no panic.
func TestBadInput(t *testing.T) {
	cases := []struct {
		name    string
		variant string
		damage  func(t *testing.T, dir string)
		want    []string // substrings of the error
	}{
		{"missing config", "llama2", func(t *testing.T, d string) { os.Remove(filepath.Join(d, "config.json")) }, []string{"config.json", "not found"}},
		{"missing shard", "sharded", func(t *testing.T, d string) { os.Remove(filepath.Join(d, "model-00002-of-00003.safetensors")) },
			[]string{"model-00002-of-00003.safetensors", "missing"}},
		{"wrong shape", "llama2", func(t *testing.T, d string) {
			editConfig(t, d, func(m map[string]any) { m["intermediate_size"] = 96 })
		}, []string{"model.safetensors", "model.layers.0.mlp.gate_proj.weight", "[64 32]", "[96 32]"}},
		{"unsupported architecture", "llama2", func(t *testing.T, d string) {
			editConfig(t, d, func(m map[string]any) { m["architectures"] = []string{"MistralForCausalLM"} })
		}, []string{"config.json", "MistralForCausalLM", "LlamaForCausalLM"}},
		{"unsupported rope", "llama2", func(t *testing.T, d string) {
			editConfig(t, d, func(m map[string]any) {
				m["rope_parameters"] = map[string]any{"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
			})
		}, []string{"config.json", "rope type \"yarn\""}},
		{"pickle only", "llama2", func(t *testing.T, d string) {
			os.Remove(filepath.Join(d, "model.safetensors"))
			os.Remove(filepath.Join(d, "ref.safetensors"))
			os.WriteFile(filepath.Join(d, "pytorch_model.bin"), []byte("PK\x03\x04 not read"), 0o644)
		}, []string{"pytorch_model.bin", "safetensors"}},
		{"missing tensor", "llama2", func(t *testing.T, d string) {
			editConfig(t, d, func(m map[string]any) { m["num_hidden_layers"] = 3 })
		}, []string{"model.layers.2.input_layernorm.weight", "missing"}},
		{"truncated safetensors", "llama2", func(t *testing.T, d string) {
			p := filepath.Join(d, "model.safetensors")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o644)
		}, []string{"model.safetensors", "tensor"}},
		{"header too big", "llama2", func(t *testing.T, d string) {
			os.WriteFile(filepath.Join(d, "model.safetensors"), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'}, 0o644)
		}, []string{"model.safetensors", "header length"}},
		{"integer weights", "llama2", func(t *testing.T, d string) {
			p := filepath.Join(d, "model.safetensors")
			b, _ := os.ReadFile(p)
			b = bytes.Replace(b, []byte(`"model.norm.weight":{"dtype":"F32"`), []byte(`"model.norm.weight":{"dtype":"I32"`), 1)
			os.WriteFile(p, b, 0o644)
		}, []string{"model.norm.weight", "I32"}},
		// Issue 13: aliased tensors are refused as the checkpoint reader refuses them.
		{"overlapping data_offsets", "llama2", func(t *testing.T, d string) {
			rewriteHeader(t, filepath.Join(d, "model.safetensors"), func(h map[string]any) {
				in := h["model.layers.0.input_layernorm.weight"].(map[string]any)
				h["model.layers.0.post_attention_layernorm.weight"].(map[string]any)["data_offsets"] = in["data_offsets"]
			})
		}, []string{"model.safetensors", `tensor "model.layers.0.post_attention_layernorm.weight"`, "data_offsets", "overlap"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, filepath.Join(hfData, c.variant))
			c.damage(t, dir)
			out := filepath.Join(t.TempDir(), "out")
			_, err := hfimport.Import(hfimport.ImportOptions{HF: dir, Common: hfimport.Common{Out: out}})
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output %s was created", out)
			}
			if es, _ := os.ReadDir(filepath.Dir(out)); len(es) > 0 {
				t.Errorf("left %d entries beside the output (temp files?)", len(es))
			}
		})
	}
}

// TestConfigSpellings: v4 (rope_theta + rope_scaling with "type") and v5 (rope_parameters)
// configs give the same rope.
func TestConfigSpellings(t *testing.T) {
	v4 := `{"architectures":["LlamaForCausalLM"],"hidden_size":32,"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":4,
	"vocab_size":16,"rope_theta":500000.0,
	"rope_scaling":{"type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64}}`
	v5 := `{"architectures":["LlamaForCausalLM"],"hidden_size":32,"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":4,
	"vocab_size":16,
	"rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
	"original_max_position_embeddings":64}}`
	a, err := hfimport.ParseConfig([]byte(v4))
	if err != nil {
		t.Fatal(err)
	}
	b, err := hfimport.ParseConfig([]byte(v5))
	if err != nil {
		t.Fatal(err)
	}
	if a.Rope != b.Rope || a.NumKVHeads != 4 || a.HeadDim != 8 {
		t.Errorf("v4 %+v (kv %d, head_dim %d) vs v5 %+v", a.Rope, a.NumKVHeads, a.HeadDim, b.Rope)
	}
	// Presets round-trip through their config.json.
	for _, name := range hfimport.PresetNames() {
		p, _ := hfimport.Preset(name)
		q, err := hfimport.ParseConfig(p.JSON())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if q.Rope != p.Rope || q.Params() != p.Params() {
			t.Errorf("%s: config.json round trip changed the config", name)
		}
	}
	if p, _ := hfimport.Preset("llama-3.2-3b"); p.Params() < 3.1e9 || p.Params() > 3.3e9 {
		t.Errorf("llama-3.2-3b has %d parameters, want ≈3.21e9", p.Params())
	}
}

// TestImportRoundTrip: a checkpoint big enough to be converted in several chunks (the
// embedding) with Linear shapes that are not multiples of the transpose tile, mixed F32/F16/
// BF16 on disk, imported to float32 and float16: every graph weight is the checkpoint tensor
// (transposed for Linears) converted exactly.
func TestImportRoundTrip(t *testing.T) {
	cfgJSON := `{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":17000,"hidden_size":96,
	"intermediate_size":200,"num_hidden_layers":1,"num_attention_heads":6,"num_key_value_heads":2,"head_dim":16,
	"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":false,"attention_bias":true}`
	cfg, err := hfimport.ParseConfig([]byte(cfgJSON))
	if err != nil {
		t.Fatal(err)
	}
	_, ws, err := hfimport.Build(cfg, ortgraph.Float)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ck := filepath.Join(dir, "ck")
	os.MkdirAll(ck, 0o755)
	os.WriteFile(filepath.Join(ck, "config.json"), []byte(cfgJSON), 0o644)
	src := map[string][]float32{}
	var tensors []safetensors.Tensor
	for i, w := range ws {
		v := make([]float32, w.NumElements())
		for j := range v {
			v[j] = float32(math.Sin(float64(i*7919+j))) * 0.5 // exactly representable after rounding below
		}
		var tt safetensors.Tensor
		switch i % 3 {
		case 0:
			tt = safetensors.F32Tensor(w.Name, w.HFShape, v)
		case 1:
			tt = safetensors.F16Tensor(w.Name, w.HFShape, v)
		default:
			tt = safetensors.BF16Tensor(w.Name, w.HFShape, v)
		}
		src[w.Name], _ = tt.Float32s()
		tensors = append(tensors, tt)
	}
	if err := safetensors.Write(filepath.Join(ck, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	for _, dt := range []string{"float32", "float16"} {
		res, err := hfimport.Import(hfimport.ImportOptions{HF: ck, Common: hfimport.Common{Out: filepath.Join(dir, dt), DType: dt, Workers: 3}})
		if err != nil {
			t.Fatal(err)
		}
		m, err := ortgraph.Load(res.Model)
		if err != nil {
			t.Fatal(err)
		}
		g := ortgraph.NewGraph(m)
		for _, w := range ws {
			got, err := m.Floats(g.Initializer(w.Name))
			if err != nil {
				t.Fatal(err)
			}
			want := src[w.Name]
			bad := 0
			for j := range got {
				k := j
				if w.Transpose { // graph [in, out] from checkpoint [out, in]
					in, out := w.HFShape[1], w.HFShape[0]
					r, c := int64(j)/out, int64(j)%out
					k = int(c*in + r)
				}
				x := want[k]
				if dt == "float16" {
					x = ortgraph.HalfToFloat(ortgraph.FloatToHalf(x))
				}
				if got[j] != x {
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%s %s: %d of %d values differ from the checkpoint", dt, w.Name, bad, len(got))
			}
		}
	}
}

// rewriteHeader edits the JSON header of a safetensors file in place, keeping its data.
func rewriteHeader(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var h map[string]any
	if err := json.Unmarshal(b[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	hdr, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	out = append(append(out, hdr...), b[8+n:]...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
