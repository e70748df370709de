package train_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// The loop's behaviour (resume, overflow skips, non-finite stops, checkpoint cadence,
// interruption) against the Go fake step of fakestep_test.go: milliseconds per run, no
// ONNX Runtime. resume_test.go runs the same loop end to end on the real engine.

func fakeExamples(n int, seed uint64) []data.Example {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([]data.Example, n)
	for i := range out {
		e := make(data.Example, 5+r.IntN(16))
		for j := range e {
			e[j] = int32(r.IntN(1000))
		}
		out[i] = e
	}
	return out
}

func fakeConfig(out string) train.Config {
	return train.Config{Out: out, MicroBatch: 2, GradAccum: 2, MaxSteps: 6, LR: 1e-2, WeightDecay: 0.01,
		Schedule: "linear", Warmup: 2, PadMultiple: 8, Seed: 5, SaveEvery: 2, Quiet: true, Hooks: train.Hooks{Log: &bytes.Buffer{}}}
}

func runFake(ctx context.Context, b *fakeBackend, cfg train.Config) (*train.Report, error) {
	t := &train.Trainer{Backend: b, Train: fakeExamples(24, 1), Eval: fakeExamples(4, 2), Config: cfg}
	return t.Run(ctx)
}

// checkpointSteps lists the step directories under out's checkpoints.
func checkpointSteps(t *testing.T, out string) []string {
	t.Helper()
	dirs, err := train.ListCheckpoints(filepath.Join(out, train.CheckpointsDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range dirs {
		names = append(names, filepath.Base(d))
	}
	return names
}

func faultAt(v float64, steps ...int) func(int) float64 {
	return func(step int) float64 {
		if slices.Contains(steps, step) {
			return v
		}
		return 0
	}
}

func faultFrom(v float64, from int) func(int) float64 {
	return func(step int) float64 {
		if step >= from {
			return v
		}
		return 0
	}
}

// TestFakeLoopResumeIsExact: a run interrupted by a cancelled ctx (as SIGINT gives) and
// resumed with --resume latest ends with the uninterrupted run's per-step losses,
// counters, evaluations, scaler state and adapter bytes.
func TestFakeLoopResumeIsExact(t *testing.T) {
	for _, c := range []struct {
		name string
		// cancelAfter is the loop step whose end cancels ctx (0: ctx is cancelled before
		// Run, as a signal during set-up); the run stops at the next step's first
		// micro-batch and checkpoints the state after cancelAfter.
		cancelAfter int
		edit        func(*train.Config)
		fault       func(int) float64
	}{
		{name: "fp32, accumulation 2, between saves", cancelAfter: 3},
		{name: "on a save step", cancelAfter: 4},
		{name: "fp16 with a skip before the interruption", cancelAfter: 3, fault: faultAt(math.Inf(1), 2),
			edit: func(c *train.Config) { c.FP16 = true }},
		{name: "no accumulation, evaluations, keep 1", cancelAfter: 5,
			edit: func(c *train.Config) { c.GradAccum, c.MaxSteps, c.EvalEvery, c.SaveEvery, c.Keep = 1, 9, 2, 3, 1 }},
		{name: "cancelled before the first step", cancelAfter: 0},
		{name: "samples every 2, a sample step before the interruption", cancelAfter: 5,
			edit: func(c *train.Config) { c.SampleEvery, c.Sampler = 2, &paramSampler{} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfgFor := func(out string) train.Config {
				cfg := fakeConfig(out)
				if c.edit != nil {
					c.edit(&cfg)
				}
				return cfg
			}
			dir := fastTempDir(t)
			sb := newFakeBackend(t)
			sb.fault = c.fault
			straight := cfgFor(filepath.Join(dir, "straight"))
			want, err := runFake(context.Background(), sb, straight)
			if err != nil {
				t.Fatal(err)
			}

			rb := newFakeBackend(t)
			rb.fault = c.fault
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.cancelAfter == 0 {
				cancel()
			}
			rb.after = func(step int) {
				if step == c.cancelAfter {
					cancel()
				}
			}
			resumed := cfgFor(filepath.Join(dir, "resumed"))
			_, err = runFake(ctx, rb, resumed)
			var intr *train.InterruptedError
			if !errors.As(err, &intr) || intr.Step != c.cancelAfter || filepath.Base(intr.Checkpoint) != train.CheckpointName(c.cancelAfter) ||
				!errors.Is(err, context.Canceled) {
				t.Fatalf("interruption: %v", err)
			}
			if _, err := os.Stat(filepath.Join(resumed.Out, "adapter_model.safetensors")); err == nil {
				t.Error("an interrupted run wrote the final adapter")
			}
			// A fresh run refuses the --out that now holds checkpoints.
			if _, err := runFake(context.Background(), newFakeBackend(t), resumed); err == nil || !strings.Contains(err.Error(), "--resume latest") {
				t.Errorf("fresh run over checkpoints: %v", err)
			}
			resumed.Resume = "latest"
			got, err := runFake(context.Background(), newFakeBackend(t), resumed)
			if err != nil {
				t.Fatal(err)
			}

			if got.OptimizerSteps != want.OptimizerSteps || got.SkippedSteps != want.SkippedSteps || got.TrainTokens != want.TrainTokens {
				t.Errorf("resumed %d/%d/%d optimizer/skipped/tokens, straight %d/%d/%d", got.OptimizerSteps, got.SkippedSteps, got.TrainTokens,
					want.OptimizerSteps, want.SkippedSteps, want.TrainTokens)
			}
			if len(got.EvalHistory) != len(want.EvalHistory) {
				t.Fatalf("evaluations resumed %v, straight %v", got.EvalHistory, want.EvalHistory)
			}
			for i := range got.EvalHistory {
				if g, w := got.EvalHistory[i], want.EvalHistory[i]; g.Step != w.Step || math.Float64bits(float64(g.Loss)) != math.Float64bits(float64(w.Loss)) {
					t.Errorf("evaluation %d: resumed %+v, straight %+v", i, g, w)
				}
			}
			a, err := train.LatestCheckpoint(filepath.Join(straight.Out, train.CheckpointsDir), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := train.LatestCheckpoint(filepath.Join(resumed.Out, train.CheckpointsDir), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Losses) != straight.MaxSteps || len(b.Losses) != len(a.Losses) {
				t.Fatalf("losses straight %v, resumed %v", a.Losses, b.Losses)
			}
			for i := range a.Losses {
				if math.Float64bits(float64(a.Losses[i])) != math.Float64bits(float64(b.Losses[i])) {
					t.Errorf("step %d loss %v straight, %v resumed", i+1, a.Losses[i], b.Losses[i])
				}
			}
			if a.Scaler != b.Scaler || a.AdamStep != b.AdamStep {
				t.Errorf("scaler/AdamW step straight %+v/%d, resumed %+v/%d", a.Scaler, a.AdamStep, b.Scaler, b.AdamStep)
			}
			fa, _ := os.ReadFile(filepath.Join(straight.Out, "adapter_model.safetensors"))
			fb, _ := os.ReadFile(filepath.Join(resumed.Out, "adapter_model.safetensors"))
			if len(fa) == 0 || !bytes.Equal(fa, fb) {
				t.Error("adapter bytes differ between the straight and the resumed run")
			}
		})
	}
}

// TestFakeLoopNonFinite: overflow skips are counted, logged and checkpointed; MaxSkips
// consecutive skips stop an fp16 run, and a non-finite fp32 step stops it at once; the
// errors name the step and the last good checkpoint.
func TestFakeLoopNonFinite(t *testing.T) {
	for _, c := range []struct {
		name     string
		edit     func(*train.Config)
		fault    func(int) float64
		wantErr  []string // "" when the run completes
		skipLogs int
		check    func(t *testing.T, out string, rep *train.Report)
	}{
		{name: "fp16 one skip", edit: func(c *train.Config) { c.FP16 = true }, fault: faultAt(math.Inf(1), 3), skipLogs: 1,
			check: func(t *testing.T, out string, rep *train.Report) {
				if rep.SkippedSteps != 1 || rep.OptimizerSteps != 5 {
					t.Errorf("%d skipped, %d optimizer steps; want 1, 5", rep.SkippedSteps, rep.OptimizerSteps)
				}
				ck, err := train.LatestCheckpoint(filepath.Join(out, train.CheckpointsDir), nil)
				if err != nil {
					t.Fatal(err)
				}
				if ck.Scaler.Scale != 32768 || ck.Scaler.ConsecutiveSkips != 0 || ck.Scaler.GrowthTracker != 3 || ck.AdamStep != 5 {
					t.Errorf("final scaler %+v, AdamW step %d", ck.Scaler, ck.AdamStep)
				}
			}},
		{name: "fp16 skips not in a row", fault: faultAt(math.NaN(), 1, 3, 5, 7), skipLogs: 4,
			edit: func(c *train.Config) { c.FP16, c.MaxSkips, c.MaxSteps = true, 2, 8 },
			check: func(t *testing.T, _ string, rep *train.Report) {
				if rep.SkippedSteps != 4 || rep.OptimizerSteps != 4 {
					t.Errorf("%d skipped, %d optimizer steps; want 4, 4", rep.SkippedSteps, rep.OptimizerSteps)
				}
			}},
		{name: "fp16 max skips", fault: faultFrom(math.NaN(), 3), skipLogs: 4,
			edit:    func(c *train.Config) { c.FP16, c.MaxSteps, c.MaxSkips, c.SaveEvery = true, 20, 4, 1 },
			wantErr: []string{"step 6: 4 consecutive steps skipped", "loss scale now 4096", "step-00000005"},
			check: func(t *testing.T, out string, _ *train.Report) {
				// Skipped steps are checkpointed too (scale and skip count are state).
				ck, err := train.LoadCheckpoint(filepath.Join(out, train.CheckpointsDir, "step-00000005"))
				if err != nil {
					t.Fatal(err)
				}
				if ck.OptimizerSteps != 2 || ck.SkippedSteps != 3 || ck.Scaler.ConsecutiveSkips != 3 || ck.Scaler.Scale != 8192 || ck.AdamStep != 2 {
					t.Errorf("checkpoint after skips: %+v", ck)
				}
			}},
		{name: "fp16 default max skips, no checkpoint yet", fault: faultFrom(math.Inf(-1), 1), skipLogs: train.DefaultMaxSkips,
			edit: func(c *train.Config) { c.FP16, c.MaxSteps, c.SaveEvery = true, 30, 0 },
			wantErr: []string{"step 10: 10 consecutive steps skipped", "loss scale now 64",
				"the last good checkpoint is none (no checkpoint was written yet)"}},
		{name: "fp32 NaN", fault: faultAt(math.NaN(), 3), edit: func(c *train.Config) { c.SaveEvery = 1 },
			wantErr: []string{"step 3: loss or gradients are not finite", "in fp32: training stopped", "the last good checkpoint is", "step-00000002"}},
		{name: "fp32 Inf after a save", fault: faultAt(math.Inf(1), 5),
			wantErr: []string{"step 5:", "fp32", "step-00000004"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newFakeBackend(t)
			b.fault = c.fault
			log := &bytes.Buffer{}
			cfg := fakeConfig(filepath.Join(fastTempDir(t), "out"))
			cfg.Log = log
			if c.edit != nil {
				c.edit(&cfg)
			}
			rep, err := runFake(context.Background(), b, cfg)
			if c.wantErr == nil && err != nil {
				t.Fatal(err)
			}
			for _, w := range c.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error %v, want it to say %q", err, w)
				}
			}
			if c.wantErr != nil {
				if _, err := os.Stat(filepath.Join(cfg.Out, "adapter_model.safetensors")); err == nil {
					t.Error("a stopped run wrote the final adapter")
				}
			}
			if n := strings.Count(log.String(), "step skipped, scale halved"); n != c.skipLogs {
				t.Errorf("%d skip messages, want %d:\n%s", n, c.skipLogs, log)
			}
			if c.check != nil {
				c.check(t, cfg.Out, rep)
			}
		})
	}
}

// TestFakeLoopCheckpointCadence: SaveEvery and the final step decide which checkpoints are
// written, Keep how many stay; each holds the losses up to its step.
func TestFakeLoopCheckpointCadence(t *testing.T) {
	for _, c := range []struct {
		steps, saveEvery, keep int
		want                   []string
	}{
		{7, 2, 0, []string{"step-00000002", "step-00000004", "step-00000006", "step-00000007"}},
		{7, 3, 2, []string{"step-00000006", "step-00000007"}},
		{7, 0, 0, []string{"step-00000007"}},
		{6, 2, 1, []string{"step-00000006"}},
		{3, 1, 0, []string{"step-00000001", "step-00000002", "step-00000003"}},
	} {
		cfg := fakeConfig(filepath.Join(fastTempDir(t), "out"))
		cfg.MaxSteps, cfg.SaveEvery, cfg.Keep = c.steps, c.saveEvery, c.keep
		if _, err := runFake(context.Background(), newFakeBackend(t), cfg); err != nil {
			t.Fatal(err)
		}
		got := checkpointSteps(t, cfg.Out)
		if !slices.Equal(got, c.want) {
			t.Errorf("steps %d, save every %d, keep %d: checkpoints %v, want %v", c.steps, c.saveEvery, c.keep, got, c.want)
			continue
		}
		for _, name := range got {
			ck, err := train.LoadCheckpoint(filepath.Join(cfg.Out, train.CheckpointsDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if len(ck.Losses) != ck.Step || ck.Total != c.steps {
				t.Errorf("%s: %d losses, total %d", name, len(ck.Losses), ck.Total)
			}
		}
	}
}

// TestFakeLoopEvaluations: the baseline, every EvalEvery steps but the last, and the final
// evaluation, each of the adapter at its step; the report and adapter are written; the
// Stepper comes from Config.NewStepper when set.
func TestFakeLoopEvaluations(t *testing.T) {
	b := newFakeBackend(t)
	cfg := fakeConfig(filepath.Join(fastTempDir(t), "out"))
	cfg.EvalEvery, cfg.MaxSteps = 2, 6
	// Config.NewStepper, when set, makes the Stepper instead of the backend.
	made := 0
	cfg.NewStepper = func(init []optim.Param, sc train.StepConfig, rows, seq int) (train.Stepper, error) {
		made++
		return b.NewStepper(init, sc, rows, seq)
	}
	rep, err := runFake(context.Background(), b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if made != 1 {
		t.Errorf("Config.NewStepper called %d times, want 1", made)
	}
	var steps []int
	for _, e := range rep.EvalHistory {
		steps = append(steps, e.Step)
	}
	if !slices.Equal(steps, []int{0, 2, 4, 6}) || b.evals != 4 {
		t.Errorf("evaluations at steps %v (%d Eval calls), want 0 2 4 6", steps, b.evals)
	}
	if !(rep.Final.Loss < rep.Baseline.Loss) {
		t.Errorf("the toy model did not learn: baseline %v, final %v", rep.Baseline.Loss, rep.Final.Loss)
	}
	if !slices.Contains(rep.Notes, "fake step: a quadratic toy model in Go") {
		t.Errorf("report notes %v lack the backend's", rep.Notes)
	}
	for _, f := range []string{"adapter_model.safetensors", "adapter_config.json", "report.json", "report.md"} {
		if _, err := os.Stat(filepath.Join(cfg.Out, f)); err != nil {
			t.Error(err)
		}
	}
}

// TestFakeLoopRefusals: what stops a run before or during its steps, each error naming the
// cause: a failed checkpoint write (naming the last good one, which stays), a resume whose
// options or artifacts changed, invalid options; and a crashed writer's leftovers are
// removed (and said so) on resume.
func TestFakeLoopRefusals(t *testing.T) {
	// A finished 6-step run to resume from (checkpoints at steps 2, 4, 6).
	done := fakeConfig(filepath.Join(fastTempDir(t), "done"))
	if _, err := runFake(context.Background(), newFakeBackend(t), done); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		// edit changes the configuration and may change the backend.
		edit    func(*train.Config, *fakeBackend)
		wantErr []string
		check   func(t *testing.T, cfg train.Config, log string)
	}{
		{name: "checkpoint write fails", wantErr: []string{"no space left", "the last good checkpoint is", "step-00000002"},
			edit: func(c *train.Config, _ *fakeBackend) {
				c.CheckpointHook = func(stage string, step int) error {
					if step == 4 && stage == "tensors" {
						return &os.PathError{Op: "write", Path: "state.json", Err: errors.New("no space left on device")}
					}
					return nil
				}
			},
			check: func(t *testing.T, cfg train.Config, _ string) {
				if got := checkpointSteps(t, cfg.Out); !slices.Equal(got, []string{"step-00000002"}) {
					t.Errorf("checkpoints %v after a failed write", got)
				}
				es, _ := os.ReadDir(filepath.Join(cfg.Out, train.CheckpointsDir))
				if len(es) != 1 {
					t.Errorf("checkpoints dir holds %v", es)
				}
			}},
		{name: "resume with another --lr", wantErr: []string{"--lr"},
			edit: func(c *train.Config, _ *fakeBackend) { c.Out, c.Resume, c.LR = done.Out, "latest", 2e-2 }},
		{name: "resume with another --grad-accum", wantErr: []string{"--grad-accum"},
			edit: func(c *train.Config, _ *fakeBackend) {
				c.Out, c.Resume, c.GradAccum = done.Out, filepath.Join(done.Out, train.CheckpointsDir, "step-00000004"), 1
			}},
		{name: "resume over changed artifacts", wantErr: []string{"manifest.json sha256"},
			edit: func(c *train.Config, b *fakeBackend) {
				c.Out, c.Resume = done.Out, "latest"
				mp := filepath.Join(b.dir, "manifest.json")
				mb, _ := os.ReadFile(mp)
				os.WriteFile(mp, append(mb, ' '), 0o644)
			}},
		{name: "unfinished write removed on resume",
			edit: func(c *train.Config, _ *fakeBackend) {
				c.Out, c.Resume = fastTempDir(t), "latest"
				// A copy of the finished run, with a crashed writer's temp directory.
				root := filepath.Join(c.Out, train.CheckpointsDir)
				for _, s := range []string{"step-00000004", ".tmp-123"} {
					os.MkdirAll(filepath.Join(root, s), 0o755)
				}
				src := filepath.Join(done.Out, train.CheckpointsDir, "step-00000004")
				es, _ := os.ReadDir(src)
				for _, e := range es {
					b, _ := os.ReadFile(filepath.Join(src, e.Name()))
					os.WriteFile(filepath.Join(root, "step-00000004", e.Name()), b, 0o644)
				}
			},
			check: func(t *testing.T, cfg train.Config, log string) {
				if !strings.Contains(log, "removed 1 unfinished checkpoint write(s)") || !strings.Contains(log, "resuming from") {
					t.Errorf("log:\n%s", log)
				}
				if got := checkpointSteps(t, cfg.Out); !slices.Equal(got, []string{"step-00000004", "step-00000006"}) {
					t.Errorf("checkpoints %v", got)
				}
			}},
		{name: "micro-batch 0", wantErr: []string{"--micro-batch and --grad-accum must be positive"},
			edit: func(c *train.Config, _ *fakeBackend) { c.MicroBatch = 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newFakeBackend(t)
			log := &bytes.Buffer{}
			cfg := fakeConfig(filepath.Join(fastTempDir(t), "out"))
			cfg.Log = log
			c.edit(&cfg, b)
			_, err := runFake(context.Background(), b, cfg)
			if c.wantErr == nil && err != nil {
				t.Fatal(err)
			}
			for _, w := range c.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error %v, want it to say %q", err, w)
				}
			}
			if c.check != nil {
				c.check(t, cfg, log.String())
			}
		})
	}
}

// lrRecorder wraps a Stepper and records the learning rate of every optimizer step.
type lrRecorder struct {
	train.Stepper
	lrs map[int]float64
}

func (r lrRecorder) Step(ctx context.Context, in train.StepInput) (train.StepOutcome, error) {
	r.lrs[in.Step] = in.LR
	return r.Stepper.Step(ctx, in)
}

// TestFakeLoopResumeLonger: a finished 6-step run resumed with --max-steps 10 runs steps 7 …
// 10 with the 10-step schedule's learning rates (linear decay, warmup unchanged: what Hugging
// Face Trainer does), keeps the first 6 steps' losses, says so in the log and the report, and
// with a constant schedule equals a straight 10-step run bit for bit; a total below the
// checkpoint's step is refused naming the options.
func TestFakeLoopResumeLonger(t *testing.T) {
	for _, sched := range []string{"linear", "cosine", "constant"} {
		t.Run(sched, func(t *testing.T) {
			dir := fastTempDir(t)
			first := fakeConfig(filepath.Join(dir, "resumed"))
			first.Schedule = sched
			if _, err := runFake(context.Background(), newFakeBackend(t), first); err != nil {
				t.Fatal(err)
			}
			six, err := train.LatestCheckpoint(filepath.Join(first.Out, train.CheckpointsDir), nil)
			if err != nil {
				t.Fatal(err)
			}
			longer := first
			longer.Resume, longer.MaxSteps = "latest", 10
			log := &bytes.Buffer{}
			longer.Log = log
			b := newFakeBackend(t)
			lrs := map[int]float64{}
			longer.NewStepper = func(init []optim.Param, sc train.StepConfig, rows, seq int) (train.Stepper, error) {
				st, err := b.NewStepper(init, sc, rows, seq)
				return lrRecorder{Stepper: st, lrs: lrs}, err
			}
			rep, err := runFake(context.Background(), b, longer)
			if err != nil {
				t.Fatal(err)
			}
			s, err := optim.NewSchedule(sched, longer.Warmup, 10)
			if err != nil {
				t.Fatal(err)
			}
			for step := 7; step <= 10; step++ {
				if want := longer.LR * s(step-1); lrs[step] != want {
					t.Errorf("step %d: lr %v, the 10-step schedule's %v", step, lrs[step], want)
				}
			}
			if len(lrs) != 4 {
				t.Errorf("steps run after the resume: %v", lrs)
			}
			ten, err := train.LatestCheckpoint(filepath.Join(longer.Out, train.CheckpointsDir), nil)
			if err != nil {
				t.Fatal(err)
			}
			if ten.Step != 10 || ten.Total != 10 || len(ten.Losses) != 10 || rep.OptimizerSteps != 10 {
				t.Fatalf("checkpoint step %d of %d with %d losses, %d optimizer steps", ten.Step, ten.Total, len(ten.Losses), rep.OptimizerSteps)
			}
			for i, l := range six.Losses {
				if math.Float64bits(float64(l)) != math.Float64bits(float64(ten.Losses[i])) {
					t.Errorf("step %d: loss %v before the resume, %v after", i+1, l, ten.Losses[i])
				}
			}
			note := "total steps changed from 6 to 10"
			if !strings.Contains(log.String(), note) || !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, note) }) {
				t.Errorf("no %q in the log:\n%s\nor the report notes %v", note, log, rep.Notes)
			}
			if sched == "constant" {
				straight := fakeConfig(filepath.Join(dir, "straight"))
				straight.Schedule, straight.MaxSteps = sched, 10
				if _, err := runFake(context.Background(), newFakeBackend(t), straight); err != nil {
					t.Fatal(err)
				}
				fa, _ := os.ReadFile(filepath.Join(straight.Out, "adapter_model.safetensors"))
				fb, _ := os.ReadFile(filepath.Join(longer.Out, "adapter_model.safetensors"))
				if len(fa) == 0 || !bytes.Equal(fa, fb) {
					t.Error("constant schedule: 6 steps resumed to 10 differ from 10 straight steps")
				}
			}
			shorter := first
			shorter.Resume, shorter.MaxSteps = "latest", 8
			if _, err := runFake(context.Background(), newFakeBackend(t), shorter); err == nil || !strings.Contains(err.Error(),
				"--max-steps") || !strings.Contains(err.Error(), "at least 10") {
				t.Errorf("resume at step 10 to 8 steps: %v", err)
			}
		})
	}
}
