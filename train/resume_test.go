package train_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare/preparetest"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// loopFixture prepares the embedded default model with the default LoRA dropout (0.1: a
// resume must replay the dropout masks too; see checkpoint.go) and makes a synthetic
// dataset.
func loopFixture(t *testing.T) (art string, trainSet, evalSet []data.Example) {
	t.Helper()
	art = preparetest.Default(t, nil)
	r := rand.New(rand.NewPCG(1, 2))
	mk := func(n int) []data.Example {
		var out []data.Example
		for i := 0; i < n; i++ {
			e := make(data.Example, 16+r.IntN(17))
			for j := range e {
				e[j] = int32(r.IntN(3072))
			}
			out = append(out, e)
		}
		return out
	}
	return art, mk(24), mk(4)
}

func loopConfig(art, out string) train.Config {
	return train.Config{Artifacts: art, Out: out, Device: "cpu", MicroBatch: 2, GradAccum: 2, MaxSteps: 6, LR: 1e-3,
		WeightDecay: 0.01, Schedule: "linear", Warmup: 2, PadMultiple: 8, Seed: 5, SaveEvery: 2, Keep: 0, Quiet: true,
		Hooks: train.Hooks{Log: &bytes.Buffer{}}, MaxGradNorm: optim.DefaultMaxGradNorm}
}

func runLoop(t *testing.T, art string, ctx context.Context, trainSet, evalSet []data.Example, cfg train.Config) (*train.Report, error) {
	t.Helper()
	eng, err := train.OpenEngine(art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	return train.Run(ctx, eng, trainSet, evalSet, cfg)
}

// sameRun fails unless two finished runs have the same steps' losses bit for bit and the
// same adapter bytes.
func sameRun(t *testing.T, straight, resumed string, steps int) {
	t.Helper()
	a, b := lastLosses(t, straight), lastLosses(t, resumed)
	if len(a) != steps || len(b) != steps {
		t.Fatalf("losses %v / %v", a, b)
	}
	for i := range a {
		if math.Float64bits(float64(a[i])) != math.Float64bits(float64(b[i])) {
			t.Errorf("step %d loss %v straight, %v resumed", i+1, a[i], b[i])
		}
	}
	fa, _ := os.ReadFile(filepath.Join(straight, "adapter_model.safetensors"))
	fb, _ := os.ReadFile(filepath.Join(resumed, "adapter_model.safetensors"))
	if len(fa) == 0 || !bytes.Equal(fa, fb) {
		t.Error("adapter bytes differ between the straight and the resumed run")
	}
}

func lastLosses(t *testing.T, out string) []train.Float {
	t.Helper()
	ck, err := train.LatestCheckpoint(filepath.Join(out, train.CheckpointsDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ck.Losses
}

// TestResumeIsExact: 6 steps straight, and 3 steps, an interruption, then a resume to
// 6, give bit-identical per-step losses and adapter bytes. The interruption is a
// cancelled context, as SIGINT gives, seen at step 4's first micro-batch.
func TestResumeIsExact(t *testing.T) {
	art, trainSet, evalSet := loopFixture(t)
	dir := t.TempDir()
	straight := filepath.Join(dir, "straight")
	if _, err := runLoop(t, art, context.Background(), trainSet, evalSet, loopConfig(art, straight)); err != nil {
		t.Fatal(err)
	}

	resumed := filepath.Join(dir, "resumed")
	ctx, cancel := context.WithCancel(context.Background())
	cfg := loopConfig(art, resumed)
	cfg.GradHook = func(step int, _ map[string][]float32) {
		if step == 3 {
			cancel()
		}
	}
	_, err := runLoop(t, art, ctx, trainSet, evalSet, cfg)
	var intr *train.InterruptedError
	if !errors.As(err, &intr) || intr.Step != 3 || filepath.Base(intr.Checkpoint) != "step-00000003" {
		t.Fatalf("interruption: %v", err)
	}
	if _, err := os.Stat(filepath.Join(resumed, "adapter_model.safetensors")); err == nil {
		t.Error("an interrupted run wrote the final adapter")
	}
	cfg = loopConfig(art, resumed)
	cfg.Resume = "latest"
	rep, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OptimizerSteps != 6 {
		t.Errorf("%d optimizer steps after resume, want 6", rep.OptimizerSteps)
	}
	sameRun(t, straight, resumed, 6)

	// A resume that changes the trajectory is refused naming the field.
	for _, c := range []struct {
		want string
		edit func(*train.Config, *[]data.Example)
	}{
		{"--lr", func(c *train.Config, _ *[]data.Example) { c.LR = 2e-3 }},
		{"--micro-batch", func(c *train.Config, _ *[]data.Example) { c.MicroBatch = 3 }},
		{"--grad-accum", func(c *train.Config, _ *[]data.Example) { c.GradAccum = 1 }},
		{"--seed", func(c *train.Config, _ *[]data.Example) { c.Seed = 6 }},
		{"--max-grad-norm", func(c *train.Config, _ *[]data.Example) { c.MaxGradNorm = 0.5 }},
		{"training examples (sha256)", func(_ *train.Config, ex *[]data.Example) {
			*ex = append([]data.Example(nil), *ex...)
			(*ex)[0] = append(data.Example{1}, (*ex)[0][1:]...)
		}},
		{"--max-seq-len", func(c *train.Config, _ *[]data.Example) { c.Inputs = map[string]string{"--max-seq-len": "64"} }},
	} {
		cfg := loopConfig(art, resumed)
		cfg.Resume = filepath.Join(resumed, train.CheckpointsDir, "step-00000004")
		ts := trainSet
		c.edit(&cfg, &ts)
		_, err := runLoop(t, art, context.Background(), ts, evalSet, cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("changed %s: %v", c.want, err)
		}
	}
	// Changed artifacts: manifest.json's hash differs.
	mp := filepath.Join(art, "manifest.json")
	mb, _ := os.ReadFile(mp)
	os.WriteFile(mp, append(mb, ' '), 0o644)
	cfg = loopConfig(art, resumed)
	cfg.Resume = "latest"
	if _, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfg); err == nil || !strings.Contains(err.Error(), "manifest.json sha256") {
		t.Errorf("changed artifacts: %v", err)
	}
	os.WriteFile(mp, mb, 0o644)
	// A fresh run refuses an --out that holds checkpoints.
	if _, err := runLoop(t, art, context.Background(), trainSet, evalSet, loopConfig(art, resumed)); err == nil || !strings.Contains(err.Error(),
		"--resume latest") {
		t.Errorf("fresh run over checkpoints: %v", err)
	}
}

// TestNonFiniteStops: NaN gradients injected at step 3 stop an fp32 run at once, and an
// fp16 run after MaxSkips consecutive skips with the scale halved each time; both errors
// name the step and the last good checkpoint.
func TestNonFiniteStops(t *testing.T) {
	art, trainSet, evalSet := loopFixture(t)
	poison := func(from int) func(int, map[string][]float32) {
		return func(step int, g map[string][]float32) {
			if step >= from {
				for _, v := range g {
					v[0] = float32(math.NaN())
					break
				}
			}
		}
	}
	t.Run("fp32", func(t *testing.T) {
		cfg := loopConfig(art, filepath.Join(t.TempDir(), "out"))
		cfg.SaveEvery, cfg.GradHook = 1, poison(3)
		_, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfg)
		if err == nil || !strings.Contains(err.Error(), "step 3:") || !strings.Contains(err.Error(), "step-00000002") || !strings.Contains(err.Error(), "fp32") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("fp16 max skips", func(t *testing.T) {
		// Loss scaling on an fp32 graph: the scaler's logic is what is under test.
		log := &bytes.Buffer{}
		cfg := loopConfig(art, filepath.Join(t.TempDir(), "out"))
		cfg.FP16, cfg.MaxSteps, cfg.MaxSkips, cfg.SaveEvery, cfg.GradHook, cfg.Log = true, 20, 4, 1, poison(3), log
		_, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfg)
		if err == nil || !strings.Contains(err.Error(), "step 6: 4 consecutive steps skipped") || !strings.Contains(err.Error(), "loss scale now 4096") ||
			!strings.Contains(err.Error(), "step-00000005") {
			t.Fatalf("error %v", err)
		}
		// Skipped steps are checkpointed too (scale and skip count are state); the
		// parameters after step 5 are those after step 2.
		if n := strings.Count(log.String(), "step skipped, scale halved"); n != 4 {
			t.Errorf("%d skip messages, want 4:\n%s", n, log)
		}
		ck, err := train.LoadCheckpoint(filepath.Join(cfg.Out, train.CheckpointsDir, "step-00000005"))
		if err != nil {
			t.Fatal(err)
		}
		if ck.OptimizerSteps != 2 || ck.SkippedSteps != 3 || ck.Scaler.ConsecutiveSkips != 3 || ck.Scaler.Scale != 8192 {
			t.Errorf("checkpoint after skips: %+v", ck)
		}
	})
}

// TestCheckpointFailureStopsRun: a write failure injected into step 4's checkpoint
// (ENOSPC after the tensors are written) stops the run with an error naming the
// previous checkpoint, which stays loadable, and no temp directory remains.
func TestCheckpointFailureStopsRun(t *testing.T) {
	art, trainSet, evalSet := loopFixture(t)
	cfg := loopConfig(art, filepath.Join(t.TempDir(), "out"))
	cfg.CheckpointHook = func(stage string, step int) error {
		if step == 4 && stage == "tensors" {
			return &os.PathError{Op: "write", Path: "state.json", Err: errors.New("no space left on device")}
		}
		return nil
	}
	_, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfg)
	if err == nil || !strings.Contains(err.Error(), "no space left") || !strings.Contains(err.Error(), "step-00000002") {
		t.Fatalf("error %v", err)
	}
	root := filepath.Join(cfg.Out, train.CheckpointsDir)
	es, _ := os.ReadDir(root)
	if len(es) != 1 || es[0].Name() != "step-00000002" {
		t.Errorf("checkpoints dir holds %v", es)
	}
	if _, err := train.LoadCheckpoint(filepath.Join(root, "step-00000002")); err != nil {
		t.Error(err)
	}
}

// TestResumeKeepsScalerState: with loss scaling, a skip before the interruption (scale
// halved, growth tracker reset, skip counted) carries over: the resumed run ends in the
// uninterrupted run's scaler state and counters.
func TestResumeKeepsScalerState(t *testing.T) {
	art, trainSet, evalSet := loopFixture(t)
	dir := t.TempDir()
	poison := func(step int, g map[string][]float32) {
		if step == 2 {
			for _, v := range g {
				v[0] = float32(math.Inf(1))
				break
			}
		}
	}
	cfg := func(out string) train.Config {
		c := loopConfig(art, out)
		c.FP16, c.GradHook = true, poison
		return c
	}
	straight := cfg(filepath.Join(dir, "straight"))
	if _, err := runLoop(t, art, context.Background(), trainSet, evalSet, straight); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := cfg(filepath.Join(dir, "resumed"))
	c.GradHook = func(step int, g map[string][]float32) {
		poison(step, g)
		if step == 3 {
			cancel()
		}
	}
	if _, err := runLoop(t, art, ctx, trainSet, evalSet, c); !errors.As(err, new(*train.InterruptedError)) {
		t.Fatalf("interruption: %v", err)
	}
	c = cfg(filepath.Join(dir, "resumed"))
	c.Resume = "latest"
	if _, err := runLoop(t, art, context.Background(), trainSet, evalSet, c); err != nil {
		t.Fatal(err)
	}
	a, err := train.LatestCheckpoint(filepath.Join(straight.Out, train.CheckpointsDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := train.LatestCheckpoint(filepath.Join(c.Out, train.CheckpointsDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Scaler != b.Scaler || a.SkippedSteps != 1 || b.SkippedSteps != 1 || a.OptimizerSteps != b.OptimizerSteps || a.AdamStep != b.AdamStep {
		t.Errorf("straight %+v %d/%d, resumed %+v %d/%d", a.Scaler, a.OptimizerSteps, a.SkippedSteps, b.Scaler, b.OptimizerSteps, b.SkippedSteps)
	}
	if a.Scaler.Scale != 32768 || a.Scaler.GrowthTracker != 4 {
		t.Errorf("scaler after one skip and 4 clean steps: %+v", a.Scaler)
	}
}

// TestResumeLonger: on the default model (CPU, gradients clipped at 1), a finished 3-step
// run resumed with --max-steps 6 runs to step 6; with a constant schedule (whose learning
// rates do not depend on the total) it then equals a straight 6-step run bit for bit, losses
// and adapter bytes.
func TestResumeLonger(t *testing.T) {
	art, trainSet, evalSet := loopFixture(t)
	dir := t.TempDir()
	cfgFor := func(out string, steps int) train.Config {
		cfg := loopConfig(art, filepath.Join(dir, out))
		cfg.Schedule, cfg.MaxSteps = "constant", steps
		return cfg
	}
	if _, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfgFor("straight", 6)); err != nil {
		t.Fatal(err)
	}
	if _, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfgFor("resumed", 3)); err != nil {
		t.Fatal(err)
	}
	cfg := cfgFor("resumed", 6)
	cfg.Resume, cfg.LogEvery = "latest", 1
	rep, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OptimizerSteps != 6 || rep.GradNorm == nil || rep.GradNorm.Steps != 6 || rep.GradNorm.Clipped == 0 {
		t.Errorf("%d optimizer steps, gradient norms %+v after resuming to 6 (want 6 steps, some clipped)", rep.OptimizerSteps, rep.GradNorm)
	}
	sameRun(t, filepath.Join(dir, "straight"), filepath.Join(dir, "resumed"), 6)
	// run.jsonl logs each resumed step's gradient norm.
	b, err := os.ReadFile(filepath.Join(dir, "resumed", "run.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var norms []float64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r train.MemRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Event == "step" && r.GradNorm > 0 {
			norms = append(norms, float64(r.GradNorm))
		}
	}
	if len(norms) != 3 {
		t.Errorf("run.jsonl logs gradient norms %v for steps 4 … 6:\n%s", norms, b)
	}
}
