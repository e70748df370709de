package prepare_test

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// TestDenseBaseStepEqualsFourBit: the dense device steps (passes.DenseBase: every 4-bit
// weight dequantized once from its initializers, folded by ONNX Runtime when the session is
// created) give the 4-bit steps' loss and gradient norm and, after one AdamW step (float32),
// their LoRA weights — for every recomputation policy, on a float32 graph prepare quantizes
// (int4, and NF4 + double quant) and on the float16 graph `synth --quantize` writes — and
// ONNX Runtime runs no DequantizeLinear, MatMulNBits or MatMulBnb4 kernel and no node of a
// dense chain in them (its profile): the base is read as float16/float32 initializers.
func TestDenseBaseStepEqualsFourBit(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		name   string
		common hfimport.Common
		tol    float64 // relative, loss and weights
	}{
		{"fp32", hfimport.Common{DType: "float32"}, 1e-5},
		{"fp16 prequantized", hfimport.Common{DType: "float16", Quantize: true}, 2e-3},
		{"fp32 nf4 double quant", hfimport.Common{DType: "float32", Quant: "nf4", BlockSize: 64, DoubleQuant: true}, 1e-5},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			dir := t.TempDir()
			c.common.Out = filepath.Join(dir, "m")
			res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 3, Common: c.common})
			if err != nil {
				t.Fatal(err)
			}
			o := prepare.DefaultOptions()
			o.Model, o.Out = res.Model, filepath.Join(dir, "art")
			o.Targets = []string{"q_proj", "v_proj", "down_proj"}
			if c.common.Quant != "" {
				o.Quant, o.BlockSize, o.DoubleQuant = c.common.Quant, c.common.BlockSize, c.common.DoubleQuant
			}
			if _, err := prepare.Run(o, nil); err != nil {
				t.Fatal(err)
			}
			b, err := data.MakeBatch([]data.Example{twoDocs(7, true), twoDocs(13, true)}, []int{0, 1}, data.BatchOptions{BatchSize: 2})
			if err != nil {
				t.Fatal(err)
			}
			for _, policy := range manifest.RecomputePolicies {
				prof := filepath.Join(dir, "prof-"+policy)
				want, wantP := denseStep(t, o.Out, policy, false, "", b)
				got, gotP := denseStep(t, o.Out, policy, true, prof, b)
				for _, v := range []struct {
					what      string
					got, want float64
				}{{"loss", got.Loss, want.Loss}, {"gradient norm", got.GradNorm, want.GradNorm}} {
					if e := math.Abs(v.got-v.want) / math.Abs(v.want); e > c.tol || math.IsNaN(v.got) {
						t.Errorf("%s: %s %.7g dense, %.7g 4-bit", policy, v.what, v.got, v.want)
					}
				}
				// AdamW's first step moves every weight by about ±lr whatever its gradient's
				// size, so float16 rounding can flip the sign of a near-zero gradient's step:
				// the weights are compared where the arithmetic is float32.
				worst := 0.0
				for name, w := range wantP {
					worst = math.Max(worst, relErr(gotP[name], w))
				}
				if c.common.DType == "float32" && worst > c.tol {
					t.Errorf("%s: LoRA weights after a step differ by %.3g (relative) > %g", policy, worst, c.tol)
				}
				for _, op := range []string{"DequantizeLinear", "MatMulNBits", "MatMulBnb4"} {
					if ran := profiledOps(t, prof, op); len(ran) > 0 {
						t.Errorf("%s: ONNX Runtime ran %d %s kernels in the dense step (e.g. %s): the base was not folded", policy, len(ran), op, ran[0])
					}
				}
				for _, events := range readProfiles(t, prof) {
					for _, e := range events {
						if e.Cat == "Node" && strings.HasPrefix(e.Name, "dense/") {
							t.Fatalf("%s: ONNX Runtime ran %s (%s) in the dense step: the base was not folded", policy, e.Name, e.Args.OpName)
						}
					}
				}
				if ran := profiledOps(t, prof, "FusedMatMul"); len(ran) == 0 {
					t.Errorf("%s: no FusedMatMul ran in the dense step", policy)
				}
				t.Logf("%s: loss %.7f dense vs %.7f 4-bit, gradient norm %.6g vs %.6g; weights after one step within %.2g", policy, got.Loss, want.Loss,
					got.GradNorm, want.GradNorm, worst)
			}
		})
	}
}

// denseStep runs one optimizer step of the device step of policy (dense or 4-bit) on b and
// returns the loss and the LoRA weights after it; prof, when set, profiles the session.
func denseStep(t *testing.T, art, policy string, dense bool, prof string, b data.Batch) (train.StepOutcome, map[string][]float32) {
	t.Helper()
	eng, init := openEngine(t, art, ortrun.Options{Device: "cpu", IntraOpThreads: 1, ProfilePrefix: prof},
		train.EngineOptions{DeviceStep: true, Policy: policy, DenseBase: dense})
	defer eng.Close()
	return stepOnce(t, eng, init, b)
}

// stepOnce runs one optimizer step of eng's device step from init on b (AdamW lr 1e-2, no
// loss scaling, dropout seed 7) and returns its outcome and the LoRA weights after it.
func stepOnce(t *testing.T, eng *train.Engine, init []optim.Param, b data.Batch) (train.StepOutcome, map[string][]float32) {
	t.Helper()
	st, err := eng.NewStepper(init, train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.GradScalerConfig{Disabled: true}}, b.Rows, b.SeqLen)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out, err := st.Step(context.Background(), train.StepInput{Step: 1, Batches: []data.Batch{b}, Seeds: []uint64{7}, LR: 1e-2})
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.Params()
	if err != nil {
		t.Fatal(err)
	}
	return out, p
}
