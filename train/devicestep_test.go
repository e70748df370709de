package train_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/prepare/preparetest"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// stepFixture prepares the default model (LoRA dropout as given), or with fp16 a random
// tiny Llama in float16; more edits the options further.
func stepFixture(t *testing.T, dropout float64, fp16 bool, more ...func(*prepare.Options)) string {
	t.Helper()
	return preparetest.Default(t, func(o *prepare.Options) {
		o.Dropout = dropout
		for _, f := range more {
			f(o)
		}
		if fp16 {
			res,
				err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 7, Common: hfimport.Common{Out: filepath.Join(t.TempDir(), "fp16"), DType: "float16"}})
			if err != nil {
				t.Fatal(err)
			}
			o.Model = res.Model
		}
	})
}

// TestNoCaptureBlockers: the default model's attention mask is built with a GatherND, which
// ORTCompat rewrites, so prepare records nothing that keeps its device step out of CUDA graphs.
func TestNoCaptureBlockers(t *testing.T) {
	art := stepFixture(t, 0, false)
	man, err := manifest.ReadManifest(art)
	if err != nil {
		t.Fatal(err)
	}
	if b := man.TrainStep.CaptureBlockers; len(b) != 0 {
		t.Errorf("capture blockers %v, want none", b)
	}
}

// stepBatches draws optimizer steps of k micro-batches; with ragged, rows and lengths vary
// (the device step pads them to rows × seq), else every batch is rows × seq.
func stepBatches(steps, k, rows, seq int, ragged bool) [][]data.Batch {
	r := rand.New(rand.NewPCG(7, 8))
	out := make([][]data.Batch, steps)
	for s := range out {
		for j := 0; j < k; j++ {
			var ex []data.Example
			n := rows
			if ragged {
				n = 1 + r.IntN(rows)
			}
			for i := 0; i < n; i++ {
				l := seq
				if ragged {
					l = 4 + r.IntN(seq-3)
				}
				e := make(data.Example, l)
				for x := range e {
					e[x] = int32(r.IntN(3072))
				}
				ex = append(ex, e)
			}
			idx := make([]int, len(ex))
			for i := range idx {
				idx[i] = i
			}
			b, err := data.MakeBatch(ex, idx, data.BatchOptions{BatchSize: rows, PadMultiple: 1})
			if err != nil {
				panic(err)
			}
			out[s] = append(out[s], b)
		}
	}
	return out
}

type stepRun struct {
	losses  []float64
	skipped []bool
	norms   []float64 // StepOutcome.GradNorm
	params  map[string][]float32
}

// runStepper runs the steps through a host or device stepper from the artifacts' initial
// LoRA values; with resumeAt > 0 the stepper is replaced by a new one restored from its state
// after that many steps.
func runStepper(t *testing.T, art string, device bool, cfg train.StepConfig, steps [][]data.Batch, rows, seq, resumeAt int) stepRun {
	t.Helper()
	eng, err := train.OpenEngineWith(art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, train.EngineOptions{Train: !device, Recompute: true,
		DeviceStep: device})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	newStepper := func() train.Stepper {
		init, err := train.LoadParams(filepath.Join(art, eng.Man.LoRAInit), eng.Man)
		if err != nil {
			t.Fatal(err)
		}
		st, err := eng.NewStepper(init, cfg, rows, seq)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	return driveSteps(t, newStepper, func() {}, steps, resumeAt)
}

// driveSteps runs the steps through the Stepper open returns; with resumeAt > 0 the stepper
// is closed (then reset runs, as a new process would start over) and replaced by a new one
// restored from its state after that many steps.
func driveSteps(t *testing.T, open func() train.Stepper, reset func(), steps [][]data.Batch, resumeAt int) stepRun {
	t.Helper()
	st := open()
	var r stepRun
	for i, bs := range steps {
		if i == resumeAt && resumeAt > 0 {
			state, err := st.State()
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			reset()
			st = open()
			if err := st.Restore(state); err != nil {
				t.Fatal(err)
			}
		}
		in := train.StepInput{Step: i + 1, Batches: bs, LR: 1e-2 * float64(i+1) / float64(len(steps))}
		for k := range bs {
			in.Seeds = append(in.Seeds, uint64(100*i+k))
		}
		out, err := st.Step(context.Background(), in)
		if err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
		r.losses = append(r.losses, out.Loss)
		r.skipped = append(r.skipped, out.Skipped)
		r.norms = append(r.norms, out.GradNorm)
	}
	var err error
	if r.params, err = st.Params(); err != nil {
		t.Fatal(err)
	}
	st.Close()
	return r
}

// TestDeviceStepMatchesHost: the device-resident step (flat state, accumulation, gradient
// clipping and AdamW inside the graph, run on the CPU provider) gives the host stepper's
// losses, gradient norms and final LoRA weights, with dropout on full batches, with padded
// ragged batches, and through loss-scale overflows (every step skipped at first, until the
// scale has halved enough); and a device run restored from its state midway equals the
// uninterrupted one bit for bit. The clipped cases clip at a norm most steps exceed.
func TestDeviceStepMatchesHost(t *testing.T) {
	const rows, seq = 2, 24
	base := train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.DefaultGradScalerConfig()}
	base.Scaler.Disabled = true
	clipped := base
	clipped.MaxGradNorm = clipAt
	overflow := base
	overflow.Scaler = optim.DefaultGradScalerConfig()
	overflow.Scaler.InitScale = 0x1p22 // the float16 backward overflows at 2^22 … 2^19 (measured), not at 2^18
	overflow.MaxGradNorm = clipAt
	for _, c := range []struct {
		name    string
		dropout float64
		ragged  bool
		fp16    bool
		cfg     train.StepConfig
		// dq: prepare --dequantize-forward, DequantizeLinear + MatMul forwards in the device
		// step as in the host's graph. The fp16 case needs it: on the CPU, fp16 MatMulNBits
		// rounds differently from fp16 DequantizeLinear + MatMul (losses 4.5e-6 apart).
		dq bool
	}{
		{"dropout, full batches, clipped", 0.1, false, false, clipped, false},
		{"ragged batches padded", 0, true, false, base, false},
		{"fp16 overflow skips", 0, false, true, overflow, true},
		{"DequantizeLinear forwards", 0.1, false, false, base, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			art := stepFixture(t, c.dropout, c.fp16, func(o *prepare.Options) { o.DequantizeForward = c.dq })
			// One micro-batch per step when overflowing: the host seeds each micro-batch's
			// backward with scale ÷ its tokens, the device with scale ÷ the step's, so with
			// several micro-batches they overflow at different scales.
			k := 2
			if c.fp16 {
				k = 1
			}
			steps := stepBatches(5, k, rows, seq, c.ragged)
			host := runStepper(t, art, false, c.cfg, steps, rows, seq, 0)
			dev := runStepper(t, art, true, c.cfg, steps, rows, seq, 0)
			skips := matchesHost(t, "the device", host, dev)
			checkClipped(t, c.cfg, host)
			if c.fp16 && (skips == 0 || skips == len(steps)) {
				t.Fatalf("%d of %d steps skipped: the overflow case tests nothing", skips, len(steps))
			}
			sameRunSteps(t, dev, runStepper(t, art, true, c.cfg, steps, rows, seq, 2))
		})
	}
}

// clipAt is the clipped test cases' --max-grad-norm: below every step's gradient norm
// (3.8 … 7.9 for the default model, 0.68 for the fp16 tiny model's one finite step).
const clipAt = 0.5

// checkClipped fails when cfg clips but no finite step's gradient norm exceeded the
// threshold (the case would not test clipping).
func checkClipped(t *testing.T, cfg train.StepConfig, r stepRun) {
	t.Helper()
	if cfg.MaxGradNorm == 0 {
		return
	}
	for i, n := range r.norms {
		if !r.skipped[i] && n > cfg.MaxGradNorm {
			return
		}
	}
	t.Fatalf("gradient norms %v never exceed --max-grad-norm %g: clipping untested", r.norms, cfg.MaxGradNorm)
}

// matchesHost fails unless a run skipped the host stepper's steps, its losses are within
// 2e-6 relative of the host's, its gradient norms within 1e-5 and its LoRA weights within
// 2e-5; it returns the skip count.
func matchesHost(t *testing.T, what string, host, got stepRun) (skips int) {
	t.Helper()
	for i := range host.losses {
		if d := math.Abs(host.norms[i]-got.norms[i]) / math.Abs(host.norms[i]); !host.skipped[i] && !(d <= 1e-5) {
			t.Errorf("step %d: gradient norm %.9g on the host, %.9g on %s (rel %.2g)", i+1, host.norms[i], got.norms[i], what, d)
		}
		if host.skipped[i] != got.skipped[i] {
			t.Fatalf("step %d: skipped %v on the host, %v on %s", i+1, host.skipped[i], got.skipped[i], what)
		}
		if host.skipped[i] {
			skips++
		}
		if d := math.Abs(host.losses[i]-got.losses[i]) / math.Abs(host.losses[i]); !(d <= 2e-6) {
			t.Errorf("step %d: loss %.9g on the host, %.9g on %s (rel %.2g)", i+1, host.losses[i], got.losses[i], what, d)
		}
	}
	worst := 0.0
	for name, h := range host.params {
		for i, v := range h {
			worst = math.Max(worst, math.Abs(float64(v-got.params[name][i])))
		}
	}
	t.Logf("losses %v; gradient norms %v; %d skipped; max |Δθ| host vs %s %.3g", host.losses, host.norms, skips, what, worst)
	if worst > 2e-5 {
		t.Errorf("LoRA weights differ by up to %g between the host and %s", worst, what)
	}
	return skips
}

// sameRunSteps fails unless a resumed run's losses and LoRA weights equal the uninterrupted
// run's bit for bit.
func sameRunSteps(t *testing.T, straight, resumed stepRun) {
	t.Helper()
	for i := range straight.losses {
		if resumed.losses[i] != straight.losses[i] {
			t.Fatalf("step %d: loss %v resumed, %v uninterrupted", i+1, resumed.losses[i], straight.losses[i])
		}
	}
	for name, v := range straight.params {
		for i := range v {
			if resumed.params[name][i] != v[i] {
				t.Fatalf("%s[%d]: %v resumed, %v uninterrupted", name, i, resumed.params[name][i], v[i])
			}
		}
	}
}

// cancelAfter wraps a Stepper so that the run's context is cancelled once optimizer step n
// has finished (as a signal arriving during step n would leave it: step n completes, the
// next is abandoned).
type cancelAfter struct {
	train.Stepper
	n      int
	cancel context.CancelFunc
}

func (c cancelAfter) Step(ctx context.Context, in train.StepInput) (train.StepOutcome, error) {
	out, err := c.Stepper.Step(ctx, in)
	if in.Step == c.n {
		c.cancel()
	}
	return out, err
}

// TestDeviceStepResumeIsExact: train.Run on the device-resident step (CPU provider, LoRA
// dropout on, ragged batches padded to one shape), 6 steps straight and 3 steps, an
// interruption, then a resume to 6, give bit-identical per-step losses and adapter bytes.
func TestDeviceStepResumeIsExact(t *testing.T) {
	art, trainSet, evalSet := loopFixture(t)
	eng, err := train.OpenEngineWith(art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, train.EngineOptions{DeviceStep: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	dir := t.TempDir()
	straight, resumed := filepath.Join(dir, "straight"), filepath.Join(dir, "resumed")
	if _, err := train.Run(context.Background(), eng, trainSet, evalSet, loopConfig(art, straight)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := loopConfig(art, resumed)
	cfg.NewStepper = func(init []optim.Param, sc train.StepConfig, rows, seq int) (train.Stepper, error) {
		st, err := eng.NewStepper(init, sc, rows, seq)
		return cancelAfter{Stepper: st, n: 3, cancel: cancel}, err
	}
	var intr *train.InterruptedError
	if _, err := train.Run(ctx, eng, trainSet, evalSet, cfg); !errors.As(err, &intr) || intr.Step != 3 {
		t.Fatalf("interruption: %v", err)
	}
	cfg = loopConfig(art, resumed)
	cfg.Resume = "latest"
	if _, err := train.Run(context.Background(), eng, trainSet, evalSet, cfg); err != nil {
		t.Fatal(err)
	}
	sameRun(t, straight, resumed, 6)
}
