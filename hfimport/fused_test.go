package hfimport_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

func importOps(t *testing.T, variant, dtype, ops string) *hfimport.Result {
	t.Helper()
	res, err := hfimport.Import(hfimport.ImportOptions{HF: filepath.Join(hfData, variant),
		Common: hfimport.Common{Out: filepath.Join(t.TempDir(), variant+"-"+ops), DType: dtype, Ops: ops}})
	if err != nil {
		t.Fatalf("import %s --ops %s: %v", variant, ops, err)
	}
	if res.Ops != ops {
		t.Fatalf("import --ops %s reports ops %q", ops, res.Ops)
	}
	return res
}

// TestFusedMatchesDecomposed: the fused (opset-23) fp32 graph's logits on the CPU EP are within
// 1e-4 of the decomposed graph's at every position (both use the same mask, so padded rows
// agree too) and of transformers' at every unpadded position, for every variant.
func TestFusedMatchesDecomposed(t *testing.T) {
	ortruntest.Lib(t)
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			r := loadRef(t, v)
			dec := runLogits(t, importOps(t, v, "float32", "decomposed").Model, r).Data.([]float32)
			fus := runLogits(t, importOps(t, v, "float32", "fused").Model, r).Data.([]float32)
			vocab := int(r.shape["logits"][2])
			worst := 0.0
			for k := range dec {
				worst = math.Max(worst, math.Abs(float64(fus[k])-float64(dec[k])))
			}
			if worst > 1e-4 || math.IsNaN(worst) {
				t.Errorf("fused vs decomposed: max abs diff %.3g > 1e-4", worst)
			}
			t.Logf("fused vs decomposed: max abs diff %.2g over all %d positions", worst, r.b*r.s)
			for _, name := range []string{"logits", "logits_fp32"} {
				want := r.f[name]
				w := 0.0
				for i := 0; i < r.b*r.s; i++ {
					if r.mask[i] == 0 {
						continue
					}
					for j := 0; j < vocab; j++ {
						k := i*vocab + j
						w = math.Max(w, math.Abs(float64(fus[k])-float64(want[k])))
					}
				}
				if w > 1e-4 || math.IsNaN(w) {
					t.Errorf("fused vs transformers %s: max abs diff %.3g > 1e-4", name, w)
				}
				t.Logf("fused vs transformers %s: max abs diff %.2g", name, w)
			}
		})
	}
}

// TestFusedGraphStructure: opset 23; one Attention, two RotaryEmbedding and two
// RMSNormalization per layer (plus the final norm), no Softmax; every value typed; every
// layer node named under /model/layers.N/ (the recompute pass's tag); Linears found by name.
func TestFusedGraphStructure(t *testing.T) {
	for _, v := range []string{"llama32", "linear_bias", "llama2"} {
		t.Run(v, func(t *testing.T) {
			res := importOps(t, v, "float32", "fused")
			m, err := ortgraph.Load(res.Model)
			if err != nil {
				t.Fatal(err)
			}
			if m.OpsetVersion("") != hfimport.FusedOpset {
				t.Errorf("opset %d, want %d", m.OpsetVersion(""), hfimport.FusedOpset)
			}
			g := ortgraph.NewGraph(m)
			count := map[string]int{}
			for _, n := range g.P.Node {
				count[n.OpType]++
				if n.Domain != "" {
					t.Errorf("node %s: domain %q", n.Name, n.Domain)
				}
				for _, o := range n.Output {
					if g.Rank(o) < 0 || g.ElemType(o) == 0 {
						t.Errorf("node %s output %s has no recorded type/rank", n.Name, o)
					}
				}
				switch n.OpType {
				case "Attention", "RotaryEmbedding":
					if !strings.HasPrefix(n.Name, "/model/layers.") || !strings.Contains(n.Name, "/self_attn/") {
						t.Errorf("%s node named %q, want /model/layers.N/self_attn/...", n.OpType, n.Name)
					}
				}
			}
			L := 2
			want := map[string]int{"Attention": L, "RotaryEmbedding": 2 * L, "RMSNormalization": 2*L + 1, "Softmax": 0, "Pow": 0, "Expand": 1}
			for op, n := range want {
				if count[op] != n {
					t.Errorf("%d %s nodes, want %d", count[op], op, n)
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
			}
			dec := importOps(t, v, "float32", "decomposed")
			t.Logf("%s: %d nodes fused, %d decomposed", v, res.Nodes, dec.Nodes)
			if res.Params != dec.Params {
				t.Errorf("fused graph has %d parameters, decomposed %d", res.Params, dec.Params)
			}
		})
	}
}

// TestFusedGradientsMatchDecomposed: prepare accepts the fused graph (16- and 4-bit bases,
// q_proj,v_proj and all seven targets, plain and chunked loss) and both training graphs
// (stored activations and per-layer recomputation) give the decomposed graph's loss and
// LoRA gradients within 1e-5 relative, on a padded batch and random LoRA values (A and B
// non-zero so every LoRA tensor has a gradient).
func TestFusedGradientsMatchDecomposed(t *testing.T) {
	ortruntest.Lib(t)
	r := loadRef(t, "llama32")
	labels := make([]int64, len(r.ids))
	for i, id := range r.ids {
		labels[i] = id
		if r.mask[i] == 0 {
			labels[i] = -100
		}
	}
	batch := data.Batch{Rows: r.b, SeqLen: r.s, InputIDs: r.ids, AttentionMask: r.mask, Labels: labels}
	models := map[string]string{}
	for _, ops := range []string{"decomposed", "fused"} {
		models[ops] = importOps(t, "llama32", "float32", ops).Model
	}
	all := []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
	for _, bits := range []int{16, 4} {
		for _, targets := range [][]string{{"q_proj", "v_proj"}, all} {
			for _, chunk := range []int{0, 3} {
				name := fmt.Sprintf("bits%d/%dtargets/chunk%d", bits, len(targets), chunk)
				t.Run(name, func(t *testing.T) {
					dirs := map[string]string{}
					for ops, model := range models {
						o := prepare.DefaultOptions()
						o.Model, o.Out, o.Targets, o.Bits, o.Dropout, o.Rank, o.LossChunks = model, filepath.Join(t.TempDir(), ops), targets, bits, 0, 4, chunk
						if _, err := prepare.Run(o, func(string, ...any) {}); err != nil {
							t.Fatalf("prepare %s: %v", ops, err)
						}
						dirs[ops] = o.Out
					}
					for _, recompute := range []bool{false, true} {
						step := func(ops string, params map[string][]float32) (*train.StepResult, *train.Engine) {
							eng, err := train.OpenEngineWith(dirs[ops], ortrun.Options{Device: "cpu", IntraOpThreads: 1}, train.EngineOptions{Train: true, Recompute: recompute})
							if err != nil {
								t.Fatalf("%s (recompute %v): %v", ops, recompute, err)
							}
							t.Cleanup(func() { eng.Close() })
							if params == nil {
								return nil, eng
							}
							st, err := eng.Step(batch, params, 1)
							if err != nil {
								t.Fatalf("%s (recompute %v): step: %v", ops, recompute, err)
							}
							return st, eng
						}
						_, eng := step("decomposed", nil)
						rng := rand.New(rand.NewPCG(1, 2))
						params := map[string][]float32{}
						for _, p := range eng.Man.Params {
							v := make([]float32, ortgraph.NumElements(p.Shape))
							for i := range v {
								v[i] = float32(rng.NormFloat64() * 0.1)
							}
							params[p.Name] = v
						}
						want, _ := step("decomposed", params)
						got, feng := step("fused", params)
						if len(feng.Man.Params) != len(eng.Man.Params) {
							t.Fatalf("fused graph has %d LoRA tensors, decomposed %d", len(feng.Man.Params), len(eng.Man.Params))
						}
						if d := math.Abs(got.LossSum - want.LossSum); d > 1e-5*math.Abs(want.LossSum) {
							t.Errorf("recompute %v: loss_sum fused %.8g, decomposed %.8g", recompute, got.LossSum, want.LossSum)
						}
						worst := 0.0
						for _, p := range eng.Man.Params {
							g, w := got.Grads[p.Name], want.Grads[p.Name]
							if len(g) != len(w) {
								t.Fatalf("gradient of %s: %d values, want %d", p.Name, len(g), len(w))
							}
							var num, den float64
							for i := range w {
								num = math.Max(num, math.Abs(float64(g[i])-float64(w[i])))
								den = math.Max(den, math.Abs(float64(w[i])))
							}
							e := num / den
							worst = math.Max(worst, e)
							if e > 1e-5 || math.IsNaN(e) || den == 0 {
								t.Errorf("recompute %v: gradient of %s: rel err %.3g > 1e-5 (max |grad| %.3g)", recompute, p.Name, e, den)
							}
						}
						t.Logf("recompute %v: loss_sum %.6f vs %.6f; worst LoRA gradient rel err %.2g over %d tensors", recompute, got.LossSum, want.LossSum, worst,
							len(eng.Man.Params))
					}
				})
			}
		}
	}
}

// TestSynthOpsDefault: synth's tiny preset defaults to the decomposed graph, --ops fused
// gives the same weights (the same bytes) in the fused graph.
func TestSynthOpsDefault(t *testing.T) {
	dir := t.TempDir()
	a, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 3, Common: hfimport.Common{Out: filepath.Join(dir, "a")}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 3, Common: hfimport.Common{Out: filepath.Join(dir, "b"), Ops: "fused"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Ops != "decomposed" || b.Ops != "fused" {
		t.Errorf("ops %q (default) and %q (--ops fused), want decomposed and fused", a.Ops, b.Ops)
	}
	if a.DataBytes != b.DataBytes || a.Params != b.Params {
		t.Errorf("fused synth wrote %d bytes / %d params, decomposed %d / %d", b.DataBytes, b.Params, a.DataBytes, a.Params)
	}
	if _,
		err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny",
		Common: hfimport.Common{Out: filepath.Join(dir, "c"), Ops: "flash"}}); err == nil || !strings.Contains(err.Error(), "--ops") {
		t.Errorf("--ops flash: error %v, want one naming --ops", err)
	}
}
