package prepare_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// TestFloat16MatchesFloat32: the same random tiny Llama written in float16 and float32
// (same seed, so the fp16 weights are the fp32 ones rounded) must give the same loss and
// LoRA gradients within half-precision tolerance, through the chunked loss and
// recomputation, with a 2^16 loss scale as the GradScaler starts with. This checks the fp16
// graph's casts (fp32 norms, softmax and loss) and that nothing overflows. The base is kept
// 16-bit: 4-bit codes of fp16-rounded weights can differ from those of the fp32 weights near
// code boundaries (measured: 2.7 % gradient difference with --bits 4, 0.38 % without), which
// would measure quantization rather than fp16 arithmetic.
func TestFloat16MatchesFloat32(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	step := func(dtype string) *train.StepResult {
		res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 7, Common: hfimport.Common{Out: filepath.Join(dir, dtype), DType: dtype}})
		if err != nil {
			t.Fatal(err)
		}
		o := prepare.DefaultOptions()
		o.Model, o.Out, o.Dropout, o.LossChunks, o.Bits = res.Model, filepath.Join(dir, dtype+"-art"), 0, 3, 16
		o.Targets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
		if _, err := prepare.Run(o, nil); err != nil {
			t.Fatal(err)
		}
		eng, params := openEngine(t, o.Out, ortrun.Options{IntraOpThreads: 1}, train.EngineOptions{Train: true, Recompute: true})
		defer eng.Close()
		values := nonZeroValues(params)
		b := tokenBatch(3, 48)
		r, err := eng.Step(b, values, 65536)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	f32, f16 := step("float32"), step("float16")
	if d := math.Abs(f16.LossSum-f32.LossSum) / f32.LossSum; d > 1e-3 {
		t.Errorf("fp16 loss sum %.4f vs fp32 %.4f (rel %.2g > 1e-3)", f16.LossSum, f32.LossSum, d)
	}
	worst := 0.0
	for name, g := range f32.Grads {
		for _, v := range f16.Grads[name] {
			if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
				t.Fatalf("%s: non-finite fp16 gradient at loss scale 2^16", name)
			}
		}
		worst = math.Max(worst, relErr(f16.Grads[name], g))
	}
	t.Logf("loss sum fp32 %.4f fp16 %.4f; worst gradient rel err %.3g", f32.LossSum, f16.LossSum, worst)
	if worst > 1e-2 {
		t.Errorf("fp16 gradients differ from fp32 by %.3g > 1e-2", worst)
	}
}
