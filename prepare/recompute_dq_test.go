package prepare_test

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// TestRecomputeReusesDequantizedWeights: with per-layer recomputation, the backward pass's
// dx = dy·W of a recomputed 4-bit Linear reads the recomputation's DequantizeLinear instead
// of dequantizing a third time (passes.Recompute, reuseRecomputedWeights). The graph must
// dequantize each 4-bit weight at most twice — once in the forward pass from initializers
// only, and at most once more gated on a gradient, so that nothing the backward pass reads is
// computed early and kept alive — and a step with recomputation must give exactly the loss
// and gradients of a step without it. The model is ortq's own decomposed graph (synth), whose
// layer scopes make recomputation re-emit the base Linears.
func TestRecomputeReusesDequantizedWeights(t *testing.T) {
	ortrun.TestLib(t)
	dir := t.TempDir()
	res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 11, Common: hfimport.Common{Out: filepath.Join(dir, "m"), DType: "float32"}})
	if err != nil {
		t.Fatal(err)
	}
	o := prepare.DefaultOptions()
	o.Model, o.Out, o.Dropout = res.Model, filepath.Join(dir, "art"), 0 // tiny vocabulary: plain loss
	o.Targets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
	if _, err := prepare.Run(o, nil); err != nil {
		t.Fatal(err)
	}

	m, err := ortgraph.Load(filepath.Join(o.Out, "train_recompute.onnx"))
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
	type counts struct{ constant, gated int }
	per := map[string]*counts{}
	for _, n := range g.P.Node {
		if n.OpType != "DequantizeLinear" || !strings.HasSuffix(n.Input[0], "_uint4") {
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
	total := 0
	for w, c := range per {
		total += c.constant + c.gated
		if c.constant != 1 || c.gated > 1 {
			t.Errorf("%s: %d ungated and %d gated DequantizeLinear, want 1 ungated (forward) and at most 1 gated (recomputation or backward)", w, c.constant, c.gated)
		}
	}
	t.Logf("%d 4-bit weights, %d DequantizeLinear in train_recompute.onnx", len(per), total)

	step := func(rec bool) *train.StepResult {
		eng, err := train.OpenEngineWith(o.Out, ortrun.Options{IntraOpThreads: 1}, train.EngineOptions{Train: true, Recompute: rec})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		params, err := train.LoadParams(filepath.Join(o.Out, eng.Man.LoRAInit), eng.Man)
		if err != nil {
			t.Fatal(err)
		}
		values := map[string][]float32{}
		for i, p := range params {
			for j := range p.Data {
				if p.Data[j] == 0 { // non-zero B so every gradient, and every dx, is exercised
					p.Data[j] = float32(math.Sin(float64(i*131+j))) * 0.05
				}
			}
			values[p.Name] = p.Data
		}
		const rows, seq = 2, 40
		b := data.Batch{Rows: rows, SeqLen: seq}
		for i := 0; i < rows*seq; i++ {
			id := int64((i*7919 + 13) % 3000)
			b.InputIDs = append(b.InputIDs, id)
			b.Labels = append(b.Labels, id)
			b.AttentionMask = append(b.AttentionMask, 1)
		}
		b.Tokens = rows * (seq - 1)
		r, err := eng.Step(b, values, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	plain, rec := step(false), step(true)
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
