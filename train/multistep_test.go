package train_test

import (
	"context"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// runMulti is runStepper for the multi-device stepper over `devices` CPU sessions, each
// standing in for one GPU; with resumeAt > 0 the stepper (and its engines) are replaced by
// new ones restored from its state after that many steps, as a resumed process would.
func runMulti(t *testing.T, art string, devices int, cfg train.StepConfig, steps [][]data.Batch, resumeAt int) stepRun {
	t.Helper()
	eo := train.EngineOptions{Train: true, Recompute: true, LazyEval: true}
	return runOnEngines(t, art, devices, eo, steps, resumeAt, func(es []*train.Engine, init []optim.Param) (train.Stepper, error) {
		return train.NewMultiStepper(es, init, cfg)
	})
}

// runOnEngines drives the stepper mk makes over `devices` CPU engines opened with eo.
func runOnEngines(t *testing.T, art string, devices int, eo train.EngineOptions, steps [][]data.Batch, resumeAt int,
	mk func([]*train.Engine, []optim.Param) (train.Stepper, error)) stepRun {
	t.Helper()
	var engines []*train.Engine
	closeAll := func() {
		for _, e := range engines {
			e.Close()
		}
		engines = nil
	}
	defer func() { closeAll() }()
	open := func() train.Stepper {
		for range devices {
			e, err := train.OpenEngineWith(art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, eo)
			if err != nil {
				t.Fatal(err)
			}
			engines = append(engines, e)
		}
		init, err := train.LoadParams(filepath.Join(art, engines[0].Man.LoRAInit), engines[0].Man)
		if err != nil {
			t.Fatal(err)
		}
		st, err := mk(engines, init)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	return driveSteps(t, open, closeAll, steps, resumeAt)
}

// compareRuns fails when the runs' skips differ, or their losses or LoRA weights differ by
// more than tol relative; it returns the largest relative differences found.
func compareRuns(t *testing.T, what string, want, got stepRun, tol float64) (dLoss, dParam float64) {
	t.Helper()
	for i := range want.losses {
		if want.skipped[i] != got.skipped[i] {
			t.Fatalf("%s: step %d skipped %v, want %v", what, i+1, got.skipped[i], want.skipped[i])
		}
		dLoss = math.Max(dLoss, math.Abs(got.losses[i]-want.losses[i])/math.Abs(want.losses[i]))
	}
	for name, w := range want.params {
		g := got.params[name]
		if len(g) != len(w) {
			t.Fatalf("%s: %s has %d values, want %d", what, name, len(g), len(w))
		}
		scale := 0.0
		for _, v := range w {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		for i, v := range w {
			dParam = math.Max(dParam, math.Abs(float64(g[i]-v))/scale)
		}
	}
	if !(dLoss <= tol) || !(dParam <= tol) {
		t.Errorf("%s: losses differ by up to %.3g relative, LoRA weights by %.3g (of each tensor's largest value); want ≤ %g", what, dLoss, dParam, tol)
	}
	return dLoss, dParam
}

// TestMultiDeviceMatchesOneDevice: two CPU sessions standing in for two GPUs give the one-
// session host stepper's losses, gradient norms (bit for bit, clipping on in two cases) and
// final adapter for the same global batch — with dropout
// and an odd number of micro-batches per step (3 on 2 devices), with fp16 loss-scale
// overflows (skipped on every device at once), with ragged batches on 3 devices (one idle
// in a step of 2), whatever the number of shards the host update is split into; and a
// multi-device run restored midway equals the uninterrupted one.
func TestMultiDeviceMatchesOneDevice(t *testing.T) {
	const rows, seq = 2, 24
	base := train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.DefaultGradScalerConfig()}
	base.Scaler.Disabled = true
	clipped := base
	clipped.MaxGradNorm = clipAt
	overflow := base
	overflow.Scaler = optim.DefaultGradScalerConfig()
	overflow.Scaler.InitScale = 0x1p22 // the float16 backward overflows at 2^22 … 2^19 (measured)
	for _, c := range []struct {
		name           string
		dropout        float64
		ragged, fp16   bool
		k, devices, at int
		cfg            train.StepConfig
		procs          int // GOMAXPROCS: how many shards the host update is split into
	}{
		{"dropout, 3 micro-batches on 2 devices, clipped", 0.1, false, false, 3, 2, 2, clipped, 0},
		{"fp16 overflow skips on 2 devices", 0, false, true, 2, 2, 3, overflow, 1},
		{"ragged, 2 micro-batches on 3 devices, 5 update shards, clipped", 0, true, false, 2, 3, 0, clipped, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.procs > 0 {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(c.procs))
			}
			art := stepFixture(t, c.dropout, c.fp16)
			steps := stepBatches(5, c.k, rows, seq, c.ragged)
			one := runStepper(t, art, false, c.cfg, steps, rows, seq, 0)
			multi := runMulti(t, art, c.devices, c.cfg, steps, 0)
			dl, dp := compareRuns(t, "multi vs one device", one, multi, 1e-6)
			checkClipped(t, c.cfg, one)
			for i := range one.norms {
				if one.norms[i] != multi.norms[i] && !one.skipped[i] {
					t.Errorf("step %d: gradient norm %v on one device, %v on %d", i+1, one.norms[i], multi.norms[i], c.devices)
				}
			}
			skips := 0
			for _, s := range one.skipped {
				if s {
					skips++
				}
			}
			if c.fp16 && (skips == 0 || skips == len(steps)) {
				t.Fatalf("%d of %d steps skipped: the overflow case tests nothing", skips, len(steps))
			}
			t.Logf("losses %v; %d skipped; multi vs one: loss rel %.3g, LoRA rel %.3g", one.losses, skips, dl, dp)
			if c.at > 0 {
				resumed := runMulti(t, art, c.devices, c.cfg, steps, c.at)
				compareRuns(t, "resumed vs uninterrupted", multi, resumed, 0)
			}
		})
	}
}

// TestMultiDeviceCancel: a cancelled step returns ctx's error, a failing micro-batch its own,
// and either leaves the state as it was; a NaN from the gradient hook stops an fp32 run.
func TestMultiDeviceCancel(t *testing.T) {
	art := stepFixture(t, 0, false)
	var engines []*train.Engine
	for range 2 {
		e, err := train.OpenEngineWith(art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, train.EngineOptions{Train: true, LazyEval: true})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		engines = append(engines, e)
	}
	init, err := train.LoadParams(filepath.Join(art, engines[0].Man.LoRAInit), engines[0].Man)
	if err != nil {
		t.Fatal(err)
	}
	cfg := train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.DefaultGradScalerConfig()}
	st, err := train.NewMultiStepper(engines, init, cfg)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := st.State()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	bs := stepBatches(1, 3, 2, 16, false)[0]
	_, err = st.Step(ctx, train.StepInput{Step: 1, Batches: bs, Seeds: []uint64{1, 2, 3}, LR: 1e-2})
	if err != context.Canceled {
		t.Fatalf("cancelled step: %v, want context.Canceled", err)
	}
	after, _ := st.State()
	for i, p := range before.Params {
		for j, v := range p.Data {
			if after.Params[i].Data[j] != v {
				t.Fatalf("%s changed by a cancelled step", p.Name)
			}
		}
	}
	// A failing micro-batch on the second device ends the step with its error, and nothing
	// is updated.
	bad := stepBatches(1, 3, 2, 16, false)[0]
	bad[1].InputIDs = slices.Clone(bad[1].InputIDs)
	bad[1].InputIDs[0] = 1 << 30 // beyond the embedding
	_, err = st.Step(context.Background(), train.StepInput{Step: 1, Batches: bad, Seeds: []uint64{1, 2, 3}, LR: 1e-2})
	if err == nil || !strings.Contains(err.Error(), "micro-batch 1 on cpu") {
		t.Fatalf("failing micro-batch: %v", err)
	}
	t.Logf("failing micro-batch: %v", err)
	after, _ = st.State()
	for i, p := range before.Params {
		if !slices.Equal(after.Params[i].Data, p.Data) {
			t.Fatalf("%s changed by a failed step", p.Name)
		}
	}
	// A gradient hook's non-finite value stops an unscaled (fp32) run, as on the host stepper.
	hooked := cfg
	hooked.Scaler.Disabled = true
	hooked.GradHook = func(step int, grads map[string][]float32) {
		for _, g := range grads {
			g[0] = float32(math.NaN())
			return
		}
	}
	st2, err := train.NewMultiStepper(engines, init, hooked)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := st2.Step(context.Background(), train.StepInput{Step: 1, Batches: bs, Seeds: []uint64{1, 2, 3}, LR: 1e-2}); err != nil || !out.NonFinite {
		t.Errorf("NaN from the gradient hook: %+v, %v; want NonFinite", out, err)
	}
	if _, err := train.NewMultiStepper(nil, init, cfg); err == nil {
		t.Error("no engines: accepted")
	}
}

// TestMultiDeviceStepMatchesHost: two CPU sessions running the device-resident step graph,
// each accumulating its share of the micro-batches in its own memory with the host reducing
// and running AdamW, give one host stepper's losses, gradient norms and weights (dropout on,
// gradients clipped, an odd number of micro-batches so one device idles through the last
// round; and fp16 overflow skips); a run
// restored midway equals the uninterrupted one bit for bit.
func TestMultiDeviceStepMatchesHost(t *testing.T) {
	const rows, seq = 2, 24
	base := train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.DefaultGradScalerConfig()}
	base.Scaler.Disabled = true
	base.MaxGradNorm = clipAt
	overflow := train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.DefaultGradScalerConfig()}
	overflow.Scaler.InitScale = 0x1p22
	for _, c := range []struct {
		name    string
		dropout float64
		fp16    bool
		k       int
		cfg     train.StepConfig
	}{
		{"dropout, 3 micro-batches on 2 devices", 0.1, false, 3, base},
		{"fp16 overflow skips", 0, true, 1, overflow},
	} {
		t.Run(c.name, func(t *testing.T) {
			// fp16: DequantizeLinear forwards as in the host's graph (see TestDeviceStepMatchesHost).
			art := stepFixture(t, c.dropout, c.fp16, func(o *prepare.Options) { o.DequantizeForward = c.fp16 })
			steps := stepBatches(5, c.k, rows, seq, false)
			host := runStepper(t, art, false, c.cfg, steps, rows, seq, 0)
			multi := runMultiDevice(t, art, 2, c.cfg, steps, rows, seq, 0)
			matchesHost(t, "two devices", host, multi)
			checkClipped(t, c.cfg, host)
			sameRunSteps(t, multi, runMultiDevice(t, art, 2, c.cfg, steps, rows, seq, 2))
		})
	}
}

// runMultiDevice is runStepper for NewMultiDeviceStepper over `devices` CPU sessions of the
// device step graph.
func runMultiDevice(t *testing.T, art string, devices int, cfg train.StepConfig, steps [][]data.Batch, rows, seq, resumeAt int) stepRun {
	t.Helper()
	eo := train.EngineOptions{DeviceStep: true, LazyEval: true}
	return runOnEngines(t, art, devices, eo, steps, resumeAt, func(es []*train.Engine, init []optim.Param) (train.Stepper, error) {
		return train.NewMultiDeviceStepper(es, init, cfg, rows, seq)
	})
}
