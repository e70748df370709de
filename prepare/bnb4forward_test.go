package prepare_test

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
)

// TestBnb4ForwardStepEqualsMatMulBnb4: with --dequantize-forward an NF4 (and NF4 + double
// quant) base's device steps compute their forward products as FusedMatMul over W
// dequantized in the graph (passes.Bnb4Forward) instead of MatMulBnb4, hold no capture
// blocker, share the recomputed products' W with the dx products (per-layer step), and give
// the MatMulBnb4 steps' loss, gradient norm and LoRA weights after one AdamW step (float32,
// CPU), for every recomputation policy.
func TestBnb4ForwardStepEqualsMatMulBnb4(t *testing.T) {
	ortruntest.Lib(t)
	dir, model, b := tinyStepFixture(t, 5)
	for _, dq := range []bool{false, true} {
		art := map[bool]string{}
		for _, fwd := range []bool{false, true} {
			o := prepare.DefaultOptions()
			o.Model, o.Out = model, filepath.Join(dir, "art", map[bool]string{false: "bnb4", true: "fwd"}[fwd], map[bool]string{false: "nf4", true: "dq"}[dq])
			o.Quant, o.BlockSize, o.DoubleQuant, o.DequantizeForward = "nf4", 64, dq, fwd
			if _, err := prepare.Run(o, nil); err != nil {
				t.Fatal(err)
			}
			art[fwd] = o.Out
			if n := sharedDx(t, filepath.Join(o.Out, manifest.StepFile(manifest.RecomputeLayer))); fwd != (n > 0) {
				t.Errorf("dq=%v dequantize-forward=%v: %d dx products read a recomputed product's W", dq, fwd, n)
			}
			man, err := manifest.ReadManifest(o.Out)
			if err != nil {
				t.Fatal(err)
			}
			want := map[bool][]string{false: {"MatMulBnb4"}, true: nil}[fwd]
			if got := man.TrainStep.CaptureBlockers; !slices.Equal(got, want) {
				t.Errorf("dq=%v dequantize-forward=%v: capture blockers %v, want %v", dq, fwd, got, want)
			}
		}
		for _, policy := range manifest.RecomputePolicies {
			sameStep(t, fmt.Sprintf("dq=%v %s", dq, policy), "in-graph", "MatMulBnb4", art[true], art[false], policy, b)
		}
	}
}

// sharedDx counts the MatMuls of a step graph whose right operand a recomputed FusedMatMul
// ("recompute/…") reads as well: dx products reading the recomputed product's W.
func sharedDx(t *testing.T, path string) int {
	nodes := graphNodes(t, path)
	recW := map[string]bool{}
	for _, n := range nodes {
		if n.OpType == "FusedMatMul" && strings.HasPrefix(n.Name, "recompute/") {
			recW[n.Input[1]] = true
		}
	}
	count := 0
	for _, n := range nodes {
		if n.OpType == "MatMul" && len(n.Input) == 2 && recW[n.Input[1]] {
			count++
		}
	}
	return count
}

// sameStep fails unless one optimizer step (float32, CPU, the policy's device step on b)
// of the artifacts got gives the loss, gradient norm and LoRA weights of want's within 1e-5;
// gotWhat and wantWhat name the two in messages.
func sameStep(t *testing.T, label, gotWhat, wantWhat, got, want, policy string, b data.Batch) {
	t.Helper()
	w, wantP := denseStep(t, want, policy, false, "", b)
	g, gotP := denseStep(t, got, policy, false, "", b)
	worst := 0.0
	for name, v := range wantP {
		worst = math.Max(worst, relErr(gotP[name], v))
	}
	for _, v := range []struct {
		what      string
		got, want float64
	}{{"loss", g.Loss, w.Loss}, {"gradient norm", g.GradNorm, w.GradNorm}, {"weights after a step", worst, 0}} {
		if e := math.Abs(v.got - v.want); e > 1e-5*math.Max(1, math.Abs(v.want)) || math.IsNaN(v.got) {
			t.Errorf("%s: %s %.7g %s, %.7g %s", label, v.what, v.got, gotWhat, v.want, wantWhat)
		}
	}
	t.Logf("%s: loss %.7f vs %.7f, gradient norm %.6g vs %.6g, weights within %.2g", label, g.Loss, w.Loss, g.GradNorm, w.GradNorm, worst)
}

// tinyStepFixture synthesizes the tiny float32 model with seed in a temporary directory and
// returns the directory, the model's path and a batch of two rows of two documents each.
func tinyStepFixture(t *testing.T, seed uint64) (dir, model string, b data.Batch) {
	t.Helper()
	dir = t.TempDir()
	res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: seed, Common: hfimport.Common{Out: filepath.Join(dir, "m"), DType: "float32"}})
	if err != nil {
		t.Fatal(err)
	}
	if b, err = data.MakeBatch([]data.Example{twoDocs(7, true), twoDocs(13, true)}, []int{0, 1}, data.BatchOptions{BatchSize: 2}); err != nil {
		t.Fatal(err)
	}
	return dir, res.Model, b
}
