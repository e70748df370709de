package prepare_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// TestAttentionForwardEqualsUnfused: with --attention-forward the eval graph and the
// recomputing device steps compute each attention whose internals the backward pass does not
// read as one opset-23 Attention node, and give the unfused graphs' eval loss and the steps'
// loss, gradient norm and LoRA weights after one AdamW step (float32, CPU; grouped-query
// attention, document-id mask, dropout on).
func TestAttentionForwardEqualsUnfused(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 9, Common: hfimport.Common{Out: filepath.Join(dir, "m"), DType: "float32"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := data.MakeBatch([]data.Example{twoDocs(7, true), twoDocs(13, true)}, []int{0, 1}, data.BatchOptions{BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	art := map[bool]string{}
	for _, fused := range []bool{false, true} {
		o := prepare.DefaultOptions()
		o.Model, o.Out, o.AttentionForward = res.Model, filepath.Join(dir, map[bool]string{false: "plain", true: "fused"}[fused]), fused
		if _, err := prepare.Run(o, nil); err != nil {
			t.Fatal(err)
		}
		art[fused] = o.Out
	}
	evalLoss := func(art string) float64 {
		eng, err := train.OpenEngineWith(art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, train.EngineOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		init, err := train.LoadParams(filepath.Join(art, eng.Man.LoRAInit), eng.Man)
		if err != nil {
			t.Fatal(err)
		}
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
	if got, want := evalLoss(art[true]), evalLoss(art[false]); math.Abs(got-want) > 1e-5*math.Abs(want) {
		t.Errorf("eval loss %.7g with Attention nodes, %.7g without", got, want)
	}
	for _, policy := range []string{manifest.RecomputeLayer, manifest.RecomputeSelective} {
		want, wantP := denseStep(t, art[false], policy, false, "", b)
		got, gotP := denseStep(t, art[true], policy, false, "", b)
		worst := 0.0
		for name, w := range wantP {
			worst = math.Max(worst, relErr(gotP[name], w))
		}
		for _, v := range []struct {
			what      string
			got, want float64
		}{{"loss", got.Loss, want.Loss}, {"gradient norm", got.GradNorm, want.GradNorm}, {"weights after a step", worst, 0}} {
			if e := math.Abs(v.got - v.want); e > 1e-5*math.Max(1, math.Abs(v.want)) || math.IsNaN(v.got) {
				t.Errorf("%s: %s %.7g with Attention nodes, %.7g without", policy, v.what, v.got, v.want)
			}
		}
		t.Logf("%s: loss %.7f vs %.7f, gradient norm %.6g vs %.6g, weights within %.2g", policy, got.Loss, want.Loss, got.GradNorm, want.GradNorm, worst)
	}
}
