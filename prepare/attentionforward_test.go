package prepare_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// TestAttentionForwardEqualsUnfused: with --attention-forward the eval graph and the
// recomputing device steps compute each attention whose internals the backward pass does not
// read as one opset-23 Attention node (or, --attention-kernel mha, one MultiHeadAttention
// node), and give the unfused graphs' eval loss and the steps'
// loss, gradient norm and LoRA weights after one AdamW step (float32, CPU; grouped-query
// attention, document-id mask, dropout on).
func TestAttentionForwardEqualsUnfused(t *testing.T) {
	ortruntest.Lib(t)
	dir, model, b := tinyStepFixture(t, 9)
	art := map[string]string{}
	for _, kernel := range []string{"", "attention", "mha"} {
		o := prepare.DefaultOptions()
		o.Model, o.Out = model, filepath.Join(dir, "plain"+kernel)
		o.AttentionForward, o.AttentionKernel = kernel != "", kernel
		if _, err := prepare.Run(o, nil); err != nil {
			t.Fatal(err)
		}
		art[kernel] = o.Out
	}
	evalLoss := func(art string) float64 {
		eng, init := openEngine(t, art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, train.EngineOptions{})
		defer eng.Close()
		params := map[string][]float32{}
		for _, p := range init {
			params[p.Name] = p.Data
		}
		sum, n, err := eng.Eval([]data.Batch{b}, params)
		if err != nil {
			t.Fatal(err)
		}
		return sum / float64(n)
	}
	want := evalLoss(art[""])
	for _, kernel := range []string{"attention", "mha"} {
		if got := evalLoss(art[kernel]); math.Abs(got-want) > 1e-5*math.Abs(want) {
			t.Errorf("eval loss %.7g with %s nodes, %.7g without", got, kernel, want)
		}
		for _, policy := range []string{manifest.RecomputeLayer, manifest.RecomputeSelective} {
			sameStep(t, policy, "with "+kernel+" nodes", "without", art[kernel], art[""], policy, b)
		}
	}
}
