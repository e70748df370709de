package prepare_test

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// TestAttentionGradEqualsGenericRule: on ortq's own decomposed graph (synth, float32, grouped
// K/V heads) with two documents packed apart and padding, the softmax gradient taken from
// rowsum(dO⊙O) inside the dP product (passes.AttentionGrad) gives the loss and LoRA
// gradients of the generic softmax rule within float32 rounding, with and without
// recomputation; the rewritten graphs hold the new row sums (one per layer) and no
// ReduceSum over the scores.
func TestAttentionGradEqualsGenericRule(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 5, Common: hfimport.Common{DType: "float32", Out: filepath.Join(dir, "m")}})
	if err != nil {
		t.Fatal(err)
	}
	arts := map[bool]string{}
	for _, generic := range []bool{false, true} {
		o := prepare.DefaultOptions()
		o.Model, o.Out, o.Dropout, o.GenericSoftmaxGrad = res.Model, filepath.Join(dir, "art-"+map[bool]string{false: "rowsum", true: "generic"}[generic]), 0, generic
		o.Targets = []string{"q_proj", "k_proj", "v_proj", "o_proj"}
		if _, err := prepare.Run(o, nil); err != nil {
			t.Fatal(err)
		}
		arts[generic] = o.Out
	}
	for _, f := range []string{"train.onnx", "train_recompute.onnx", "train_step.onnx", "train_step_none.onnx"} {
		if n := rowSums(t, filepath.Join(arts[false], f)); n != 2 {
			t.Errorf("%s: %d rewritten softmax gradients, want 2 (one per layer)", f, n)
		}
		if n := rowSums(t, filepath.Join(arts[true], f)); n != 0 {
			t.Errorf("%s with GenericSoftmaxGrad: %d rewritten softmax gradients, want 0", f, n)
		}
	}
	b, err := data.MakeBatch([]data.Example{twoDocs(7, true), twoDocs(13, true)[:17]}, []int{0, 1}, data.BatchOptions{BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []bool{false, true} {
		step := func(art string) *train.StepResult {
			eng, init := openEngine(t, art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, train.EngineOptions{Train: true, Recompute: rec})
			defer eng.Close()
			r, err := eng.Step(b, nonZeroValues(init), 1)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		got, want := step(arts[false]), step(arts[true])
		if e := math.Abs(got.LossSum-want.LossSum) / math.Abs(want.LossSum); e > 1e-6 || math.IsNaN(got.LossSum) {
			t.Errorf("recompute %v: loss sum %.8g, generic rule %.8g", rec, got.LossSum, want.LossSum)
		}
		worst := 0.0
		for name, w := range want.Grads {
			e := relErr(got.Grads[name], w)
			worst = math.Max(worst, e)
			if e > 2e-5 || math.IsNaN(e) {
				t.Errorf("recompute %v: gradient of %s: rel err %.3g > 2e-5", rec, name, e)
			}
		}
		t.Logf("recompute %v: loss sum %.7f vs %.7f; worst gradient rel err %.2g over %d tensors", rec, got.LossSum, want.LossSum, worst, len(want.Grads))
	}
}

// rowSums counts the nodes AttentionGrad names for its row sums in the graph at path.
func rowSums(t *testing.T, path string) int {
	n := 0
	for _, nd := range graphNodes(t, path) {
		if nd.OpType == "ReduceSum" && strings.Contains(nd.Name, "/rowsum/") {
			n++
		}
	}
	return n
}
