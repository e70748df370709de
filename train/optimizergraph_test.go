package train_test

import (
	"math"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/train/optim"
	"google.golang.org/protobuf/proto"
)

// TestOptimizerGraphIsAdamW: the optimizer graph (what each NCCL rank runs on its summed
// gradients) applied to a gradient sum already in the state gives the host AdamW's weights
// and moments for the mean gradient (unscaled by the loss scale, clipped to max_norm) within
// 1e-6 relative, leaves the gradient sum and loss statistics as they were, reports the
// gradient norm, and with apply = 0 (or an Inf in the sum) changes no weight.
func TestOptimizerGraphIsAdamW(t *testing.T) {
	ortruntest.Lib(t)
	const n = 6
	m, err := passes.OptimizerGraph(n)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(m.P)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ortrun.NewSessionFromBytes(b, ortrun.Options{Device: "cpu", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	cfg := optim.DefaultAdamWConfig()
	const lr, scale, maxNorm = 0.01, 8.0, 0.5
	params := []float32{0.5, -0.25, 0.125, 1, -1, 0.01}
	gsum := []float32{4, -2, 0.5, 8, 0, -6} // Σ of scaled gradients: the mean gradient is gsum/scale
	run := func(apply float32, gs []float32) map[string]*ortrun.Tensor {
		a := cfg.Scalars(lr, 1)
		sc := make([]float32, manifest.StepScalars)
		sc[manifest.StepScalarInvScale], sc[manifest.StepScalarDecay], sc[manifest.StepScalarW1] = 1/scale, a.Decay, a.W1
		sc[manifest.StepScalarBeta2], sc[manifest.StepScalarC2], sc[manifest.StepScalarNegStep] = a.Beta2, a.C2, a.NegStepSize
		sc[manifest.StepScalarBC2Sqrt], sc[manifest.StepScalarEps], sc[manifest.StepScalarMaxNorm] = a.BC2Sqrt, a.Eps, maxNorm
		sc[manifest.StepScalarKeep], sc[manifest.StepScalarApply] = 1, apply
		vec := func(v []float32) *ortrun.Tensor {
			return &ortrun.Tensor{DType: ortrun.Float32, Shape: []int64{int64(len(v))}, Data: v}
		}
		out, err := sess.Run(map[string]*ortrun.Tensor{
			passes.StateInput(manifest.StateParams): vec(params), passes.StateInput(manifest.StateExpAvg): vec(make([]float32, n)),
			passes.StateInput(manifest.StateExpAvgSq): vec(make([]float32, n)), passes.StateInput(manifest.StateGradSum): vec(gs),
			passes.StateInput(manifest.StateStats): vec([]float32{12.5, 40, 0, 0}), passes.StepScalarsInput: vec(sc),
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := run(1, gsum)
	g := make([]float32, n)
	for i := range g {
		g[i] = gsum[i] / scale
	}
	grads := map[string][]float32{"w": g}
	norm := optim.ClipGrads([]optim.Param{{Name: "w", Data: g}}, grads, maxNorm)
	host, err := optim.NewAdamW([]optim.Param{{Name: "w", Data: append([]float32(nil), params...)}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Step(grads, lr); err != nil {
		t.Fatal(err)
	}
	st := host.State()
	for _, c := range []struct {
		name      string
		got, want []float32
	}{
		{"weights", out[passes.StateOutput(manifest.StateParams)].Data.([]float32), host.Params()[0].Data},
		{"exp_avg", out[passes.StateOutput(manifest.StateExpAvg)].Data.([]float32), st.ExpAvg["w"]},
		{"exp_avg_sq", out[passes.StateOutput(manifest.StateExpAvgSq)].Data.([]float32), st.ExpAvgSq["w"]},
		{"gradient sum", out[passes.StateOutput(manifest.StateGradSum)].Data.([]float32), gsum},
	} {
		for i := range c.want {
			if d := math.Abs(float64(c.got[i] - c.want[i])); d > 1e-6*math.Max(1e-3, math.Abs(float64(c.want[i]))) {
				t.Errorf("%s[%d] = %g, host %g", c.name, i, c.got[i], c.want[i])
			}
		}
	}
	stats := out[passes.StateOutput(manifest.StateStats)].Data.([]float32)
	if stats[0] != 12.5 || stats[1] != 40 || stats[2] != 0 || math.Abs(float64(stats[3])-norm) > 1e-6*norm {
		t.Errorf("stats %v, want [12.5 40 0 %g]", stats, norm)
	}
	for _, c := range []struct {
		name  string
		apply float32
		gs    []float32
	}{{"apply 0", 0, gsum}, {"an Inf in the sum", 1, []float32{4, float32(math.Inf(1)), 0, 0, 0, 0}}} {
		got := run(c.apply, c.gs)[passes.StateOutput(manifest.StateParams)].Data.([]float32)
		for i := range params {
			if got[i] != params[i] {
				t.Errorf("%s: weight %d changed to %g from %g", c.name, i, got[i], params[i])
			}
		}
	}
}
