package prepare_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// TestRecomputeReusesDequantizedWeights: with per-layer recomputation, the backward pass's
// dx = dy·W of a recomputed 4-bit Linear reads the recomputation's dequantized W instead of
// dequantizing a third time (passes.Recompute, reuseRecomputedWeights). The graph must
// dequantize each 4-bit weight at most twice — once in the forward pass from initializers
// only, and at most once more gated on a gradient, so that nothing the backward pass reads is
// computed early and kept alive — and a step with recomputation must give exactly the loss
// and gradients of a step without it. The model is ortq's own decomposed graph (synth), whose
// layer scopes make recomputation re-emit the base Linears (float32 bit for bit; float16
// within a tolerance, see below), in three constructions: a
// float32 graph that prepare quantizes; the float16 graph `ortq synth --quantize` writes
// (MatMulNBits already, taken as prequantized: the construction of the Llama-3.2-3B
// measurements); and a prequantized asymmetric one with block 128 > K, so K is padded and
// the dequantization chain ends in a Slice.
//
// What ONNX Runtime runs is checked too, from its profile: it must execute exactly the
// graph's DequantizeLinear nodes. A DequantizeLinear whose output has two readers is
// duplicated by ONNX Runtime's EnsureUniqueDQForNodeUnit (one copy per reader), which undid
// the reuse when it shared the DequantizeLinear's own output (20 kernels per layer for a
// graph holding 14); so no DequantizeLinear output may have more than one reader either.
func TestRecomputeReusesDequantizedWeights(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		name   string
		common hfimport.Common
	}{
		{"fp32 quantized by prepare", hfimport.Common{DType: "float32"}},
		{"fp16 prequantized (synth --quantize)", hfimport.Common{DType: "float16", Quantize: true}},
		{"fp32 prequantized asymmetric K padded", hfimport.Common{DType: "float32", Quantize: true, BlockSize: 128, Asymmetric: true}},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			dir := t.TempDir()
			c.common.Out = filepath.Join(dir, "m")
			res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 11, Common: c.common})
			if err != nil {
				t.Fatal(err)
			}
			o := prepare.DefaultOptions()
			o.Model, o.Out, o.Dropout = res.Model, filepath.Join(dir, "art"), 0 // tiny vocabulary: plain loss
			o.Targets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
			if c.common.BlockSize != 0 {
				o.BlockSize = c.common.BlockSize
			}
			o.Asymmetric = c.common.Asymmetric
			if _, err := prepare.Run(o, nil); err != nil {
				t.Fatal(err)
			}
			graphDQ := checkRecomputeDQ(t, filepath.Join(o.Out, "train_recompute.onnx"))

			prof := filepath.Join(dir, "prof")
			step := func(rec bool) *train.StepResult {
				ro := ortrun.Options{IntraOpThreads: 1}
				if rec {
					ro.ProfilePrefix = prof
				}
				eng, params := openEngine(t, o.Out, ro, train.EngineOptions{Train: true, Recompute: rec})
				defer eng.Close()
				values := nonZeroValues(params)
				b := tokenBatch(2, 40)
				r, err := eng.Step(b, values, 1)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			plain, rec := step(false), step(true)
			if c.common.DType == "float16" {
				// ONNX Runtime's CPU provider does not compute the float16 graph's recomputed
				// activations bit for bit as the forward pass did (already so before the
				// reuse; float32 graphs are exact), so float16 is held to a tolerance.
				if d := math.Abs(rec.LossSum-plain.LossSum) / math.Abs(plain.LossSum); d > 1e-5 {
					t.Errorf("loss sum with recomputation %v, without %v", rec.LossSum, plain.LossSum)
				}
				worst := 0.0
				for name, want := range plain.Grads {
					worst = math.Max(worst, relErr(rec.Grads[name], want))
				}
				if worst > 1e-2 {
					t.Errorf("float16 gradients with recomputation differ from those without by %.3g (max-abs relative) > 1e-2", worst)
				}
				t.Logf("float16: loss sum %v vs %v, worst gradient difference %.2g", rec.LossSum, plain.LossSum, worst)
			} else {
				if rec.LossSum != plain.LossSum {
					t.Errorf("loss sum with recomputation %v, without %v", rec.LossSum, plain.LossSum)
				}
				for name, want := range plain.Grads {
					got := rec.Grads[name]
					if len(got) != len(want) {
						t.Fatalf("%s: %d gradient values with recomputation, %d without", name, len(got), len(want))
					}
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Errorf("%s[%d]: %v with recomputation, %v without (want bit-identical)", name, i, got[i], want[i])
							break
						}
					}
				}
			}

			// ONNX Runtime's profile (written when the sessions close): the DequantizeLinear
			// kernels it ran in the training session.
			ran := profiledOps(t, prof, "DequantizeLinear")
			var dup []string
			for _, n := range ran {
				if strings.Contains(n, "duplicated") {
					dup = append(dup, n)
				}
			}
			if len(dup) > 0 {
				t.Errorf("ONNX Runtime duplicated %d DequantizeLinear nodes (EnsureUniqueDQForNodeUnit), e.g. %s", len(dup), dup[0])
			}
			if len(ran) != graphDQ {
				t.Errorf("ONNX Runtime ran %d DequantizeLinear nodes, the graph holds %d", len(ran), graphDQ)
			}
			t.Logf("ONNX Runtime ran %d DequantizeLinear nodes (graph: %d)", len(ran), graphDQ)
		})
	}
}

// checkRecomputeDQ checks the dequantizations of a recomputing training graph (see
// TestRecomputeReusesDequantizedWeights) and returns how many DequantizeLinear it holds.
func checkRecomputeDQ(t *testing.T, path string) int {
	t.Helper()
	m, err := ortgraph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	g := ortgraph.NewGraph(m)
	// fromInputs: the value depends on a graph input (the batch), i.e. in a training graph on
	// the forward activations or, for a weight, on a gradient gate.
	memo := map[string]bool{}
	isInput := map[string]bool{}
	for _, in := range g.P.Input {
		if g.Initializer(in.Name) == nil {
			isInput[in.Name] = true
		}
	}
	var fromInputs func(v string) bool
	fromInputs = func(v string) bool {
		if r, ok := memo[v]; ok {
			return r
		}
		memo[v] = isInput[v]
		if p := g.Producer(v); p != nil {
			for _, in := range ortgraph.NodeInputs(p) {
				if in != "" && fromInputs(in) {
					memo[v] = true
					break
				}
			}
		}
		return memo[v]
	}
	cons := g.Consumers()
	type counts struct{ constant, gated int }
	per := map[string]*counts{}
	total := 0
	for _, n := range g.P.Node {
		if n.OpType != "DequantizeLinear" {
			continue
		}
		total++
		if r := len(cons[n.Output[0]]); r != 1 {
			t.Errorf("DequantizeLinear %q has %d readers, want 1 (ONNX Runtime gives each reader its own copy)", n.Name, r)
		}
		if !strings.HasSuffix(n.Input[0], "_uint4") {
			continue
		}
		c := per[n.Input[0]]
		if c == nil {
			c = &counts{}
			per[n.Input[0]] = c
		}
		if fromInputs(n.Output[0]) {
			c.gated++
		} else {
			c.constant++
		}
	}
	if len(per) == 0 {
		t.Fatal("train_recompute.onnx has no DequantizeLinear of a 4-bit weight")
	}
	for w, c := range per {
		if c.constant != 1 || c.gated > 1 {
			t.Errorf("%s: %d ungated and %d gated DequantizeLinear, want 1 ungated (forward) and at most 1 gated (recomputation or backward)", w, c.constant, c.gated)
		}
	}
	t.Logf("%d 4-bit weights, %d DequantizeLinear in %s", len(per), total, filepath.Base(path))
	return total
}

// profiledOps returns the distinct names of the nodes of type op that ONNX Runtime's
// profiles <prefix>_*.json record as run.
func profiledOps(t *testing.T, prefix, op string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, events := range readProfiles(t, prefix) {
		for _, e := range events {
			if e.Cat == "Node" && e.Args.OpName == op && strings.HasSuffix(e.Name, "_kernel_time") {
				seen[strings.TrimSuffix(e.Name, "_kernel_time")] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// profileEvent is one event of an ONNX Runtime profile (the fields the tests read).
type profileEvent struct {
	Cat  string  `json:"cat"`
	Name string  `json:"name"`
	TS   float64 `json:"ts"`
	Args struct {
		OpName string `json:"op_name"`
	} `json:"args"`
}

// readProfiles parses every ONNX Runtime profile prefix_*.json (one per session), in file
// name order.
func readProfiles(t *testing.T, prefix string) [][]profileEvent {
	t.Helper()
	files, err := filepath.Glob(prefix + "_*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no ONNX Runtime profile %s_*.json (%v)", prefix, err)
	}
	var out [][]profileEvent
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var events []profileEvent
		if err := json.Unmarshal(b, &events); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, events)
	}
	return out
}
