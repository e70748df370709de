package train

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/internal/runreport"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train/optim"
)

// Backend is what the loop needs from the artifacts it trains, beside the Stepper: the
// directory and manifest (the LoRA init file, the manifest hash a resume must match, the
// adapter's config), evaluation, and the Stepper itself. *Engine is the ONNX Runtime
// backend; the loop's own tests drive a Go fake, so that resume, overflow skips and
// checkpoint cadence are tested in milliseconds.
type Backend interface {
	// Artifacts are the artifacts directory and its manifest.
	Artifacts() (dir string, man *manifest.Manifest)
	// RunNotes say how the backend departed from what was asked, for the run's report.
	RunNotes() []string
	// Eval returns the summed loss and counted tokens of batches under params.
	Eval(batches []data.Batch, params map[string][]float32) (lossSum float64, tokens int64, err error)
	// NewStepper makes the run's Stepper starting from init, for batches up to rows × seq.
	NewStepper(init []optim.Param, cfg StepConfig, rows, seq int) (Stepper, error)
}

// Artifacts returns e's directory and manifest (Backend).
func (e *Engine) Artifacts() (string, *manifest.Manifest) { return e.Dir, e.Man }

// RunNotes returns e.Notes (Backend).
func (e *Engine) RunNotes() []string { return e.Notes }

// Trainer is one fine-tuning run: Train and Eval examples on Backend with Config.
type Trainer struct {
	Backend     Backend
	Train, Eval []data.Example
	Config      Config
}

// Run is the fine-tuning loop: baseline evaluation (or a resume from a checkpoint),
// optimizer steps of GradAccum token-weighted micro-batches with AdamW and a warmup
// schedule, periodic evaluation and checkpoints, then the final evaluation, the adapter
// and the run report in Config.Out. A cancelled ctx stops it with an *InterruptedError
// after checkpointing the last finished step.
func (t *Trainer) Run(ctx context.Context) (*Report, error) {
	l, err := t.setup()
	if err != nil {
		return nil, err
	}
	defer l.stepper.Close()
	resumed, err := l.openCheckpoints()
	if err != nil {
		return nil, err
	}
	l.rep = &Report{Config: l.cfg, StartedAt: time.Now(), Notes: append([]string(nil), t.Backend.RunNotes()...)}
	for _, n := range t.Backend.RunNotes() {
		l.logf("%s", n)
	}
	mon := runreport.NewRSSMonitor(200*time.Millisecond, nil)
	mon.Start()
	defer mon.Stop()
	if l.cfg.DumpBatches != "" {
		if l.dump, err = openBatchDump(l.cfg.DumpBatches, l.cfg, l.total, l.evals); err != nil {
			return nil, err
		}
		defer l.dump.close() // on error paths; finish closes it and reports a failed write
	}
	if err := l.begin(resumed); err != nil {
		return nil, err
	}
	l.prog = NewProgress(ProgressOptions{Total: l.total, Quiet: l.cfg.Quiet, Writer: l.log, Start: l.first - 1})
	if err := l.openRunLog(); err != nil {
		return nil, err
	}
	defer l.rlog.close()
	start := time.Now()
	for step := l.first; step <= l.total; step++ {
		if err := l.step(ctx, step); err != nil {
			return nil, err
		}
	}
	return l.finish(start, mon)
}

// run is the state of one Trainer.Run.
type run struct {
	cfg     Config
	b       Backend
	dir     string
	man     *manifest.Manifest
	train   []data.Example
	log     io.Writer // Config.Log, else stderr
	it      *data.Iterator
	evals   []data.Batch
	total   int
	sched   optim.Schedule
	params  []optim.Param // the LoRA tensors in manifest order, which checkpoints and the adapter follow
	stepper Stepper
	maxSkip int

	// Checkpoint bookkeeping: what a resume must match, and the newest checkpoint known
	// to be good (named when the run has to stop).
	ckRoot, manSHA string
	compat         map[string]string
	lastGood       string
	lastSaved      int

	rep       *Report
	first     int // the first step this process runs
	losses    []Float
	gradNorms []Float
	stepTimes []time.Duration
	trainTime time.Duration
	prog      *Progress
	rlog      *runLog
	dump      *batchDump // Config.DumpBatches; nil: none
	// sampleFailed: a round of samples failed (sample.go), which the report notes once.
	sampleFailed bool
}

// setup checks the configuration and makes the data iterator, the evaluation batches, the
// schedule, the initial LoRA values and the Stepper.
func (t *Trainer) setup() (*run, error) {
	cfg := t.Config
	if cfg.MicroBatch <= 0 || cfg.GradAccum <= 0 {
		return nil, fmt.Errorf("--micro-batch and --grad-accum must be positive")
	}
	l := &run{cfg: cfg, b: t.Backend, train: t.Train, log: cfg.Log, lastSaved: -1, first: 1,
		lastGood: noCheckpoint}
	if l.log == nil {
		l.log = os.Stderr
	}
	if cfg.DumpBatches != "" && cfg.Resume != "" {
		return nil, fmt.Errorf("--dump-batches records a run from its first step: drop it, or start afresh instead of --resume")
	}
	l.dir, l.man = t.Backend.Artifacts()
	bopts := data.BatchOptions{BatchSize: cfg.MicroBatch, PadMultiple: cfg.PadMultiple}
	var err error
	if l.it, err = data.NewIterator(t.Train, bopts, cfg.Seed); err != nil {
		return nil, err
	}
	if l.evals, err = data.Batches(t.Eval, bopts); err != nil {
		return nil, err
	}
	if cfg.MaxEvalBatches > 0 && len(l.evals) > cfg.MaxEvalBatches {
		l.evals = l.evals[:cfg.MaxEvalBatches]
	}
	perEpoch := (l.it.BatchesPerEpoch() + cfg.GradAccum - 1) / cfg.GradAccum
	l.total = cfg.MaxSteps
	if l.total <= 0 {
		ep := cfg.Epochs
		if ep <= 0 {
			ep = 1
		}
		l.total = int(math.Ceil(ep * float64(perEpoch)))
	}
	if l.total <= 0 {
		return nil, fmt.Errorf("no optimizer steps to run: %d training examples", len(t.Train))
	}
	l.params, err = LoadParams(filepath.Join(l.dir, l.man.LoRAInit), l.man)
	if err == nil && cfg.InitAdapter != "" {
		l.params, err = LoadInitParams(cfg.InitAdapter, l.man) // --init-adapter: start from a PEFT adapter
	}
	if err != nil {
		return nil, err
	}
	if l.sched, err = optim.NewSchedule(cfg.Schedule, cfg.Warmup, l.total); err != nil {
		return nil, err
	}
	newStepper := t.Backend.NewStepper
	if cfg.NewStepper != nil {
		newStepper = cfg.NewStepper
	}
	if l.stepper, err = newStepper(l.params, cfg.stepConfig(), cfg.MicroBatch, maxBatchSeq(t.Train, bopts)); err != nil {
		return nil, err
	}
	l.maxSkip = cfg.MaxSkips
	if l.maxSkip <= 0 {
		l.maxSkip = DefaultMaxSkips
	}
	return l, nil
}

func (l *run) logf(format string, a ...any) { fmt.Fprintf(l.log, format+"\n", a...) }

// openCheckpoints works out what a resume must match, removes unfinished checkpoint
// writes, and returns the checkpoint to resume from (nil for a fresh run, which refuses an
// Out that already holds checkpoints).
func (l *run) openCheckpoints() (*Checkpoint, error) {
	cfg := l.cfg
	l.ckRoot = filepath.Join(cfg.Out, CheckpointsDir)
	var err error
	if l.manSHA, err = fileSHA256(filepath.Join(l.dir, manifest.ManifestFile)); err != nil {
		return nil, fmt.Errorf("artifacts %q: %w", l.dir, err)
	}
	l.compat = compatFingerprint(cfg, l.manSHA, l.train)
	if removed, err := CleanCheckpointTemp(l.ckRoot); err != nil {
		return nil, err
	} else if len(removed) > 0 {
		l.logf("removed %d unfinished checkpoint write(s) in %s (%s)", len(removed), l.ckRoot, strings.Join(removed, ", "))
	}
	switch cfg.Resume {
	case "":
		if dirs, err := ListCheckpoints(l.ckRoot); err != nil {
			return nil, err
		} else if len(dirs) > 0 {
			return nil, fmt.Errorf("%q already holds checkpoints (newest %s): pass --resume latest to continue that run, --force to discard them, or choose "+
				"another --out", l.ckRoot, filepath.Base(dirs[len(dirs)-1]))
		}
		return nil, nil
	case "latest":
		return LatestCheckpoint(l.ckRoot, l.logf)
	default:
		return LoadCheckpoint(cfg.Resume)
	}
}

// begin restores the resumed checkpoint's state into the Stepper, the iterator and the
// report, or evaluates the starting adapter (the baseline) for a fresh run.
func (l *run) begin(resumed *Checkpoint) error {
	rep := l.rep
	if resumed == nil {
		var err error
		if rep.Baseline, err = l.evaluate(0); err != nil {
			return fmt.Errorf("baseline evaluation: %w", err)
		}
		rep.EvalHistory = append(rep.EvalHistory, rep.Baseline)
		return nil
	}
	if err := checkCompat(resumed.Dir, resumed.Compat, l.compat); err != nil {
		return err
	}
	if err := l.checkTotal(resumed); err != nil {
		return err
	}
	st := StepState{Adam: resumed.Adam, Scaler: resumed.Scaler}
	for _, p := range l.params {
		st.Params = append(st.Params, optim.Param{Name: p.Name, Data: resumed.Params[p.Name]})
	}
	if err := l.stepper.Restore(st); err != nil {
		return fmt.Errorf("checkpoint %q: %w", resumed.Dir, err)
	}
	if err := l.it.SetPosition(resumed.Data); err != nil {
		return fmt.Errorf("checkpoint %q: %w", resumed.Dir, err)
	}
	rep.Baseline = resumed.Baseline
	rep.EvalHistory = append(rep.EvalHistory, resumed.EvalHistory...)
	rep.OptimizerSteps, rep.SkippedSteps, rep.TrainTokens = resumed.OptimizerSteps, resumed.SkippedSteps, resumed.TrainTokens
	l.losses = append(l.losses, resumed.Losses...)
	if len(resumed.GradNorms) == len(resumed.Losses) {
		l.gradNorms = append(l.gradNorms, resumed.GradNorms...)
	}
	for _, ms := range resumed.StepTimesMS {
		l.stepTimes = append(l.stepTimes, time.Duration(ms*float64(time.Millisecond)))
	}
	l.trainTime = time.Duration(resumed.TrainTimeNS)
	l.first = resumed.Step + 1
	l.lastGood, l.lastSaved = resumed.Dir, resumed.Step
	rep.Notes = append(rep.Notes, fmt.Sprintf("resumed from %s after step %d", resumed.Dir, resumed.Step))
	l.logf("resuming from %s: step %d of %d", resumed.Dir, resumed.Step, l.total)
	return nil
}

// checkTotal accepts a resume to another total step count (--max-steps, --epochs) as long
// as the checkpoint's steps fit in it; the schedule is then the new total's, as Hugging Face
// Trainer does (README, "Training longer"), and the run says so.
func (l *run) checkTotal(resumed *Checkpoint) error {
	if resumed.Total == l.total {
		return nil
	}
	if resumed.Step > l.total {
		return fmt.Errorf("cannot resume from %q: it is at step %d, beyond this run's total of %d steps (--max-steps, --epochs): "+
			"pass a total of at least %d", resumed.Dir, resumed.Step, l.total, resumed.Step)
	}
	note := fmt.Sprintf("total steps changed from %d to %d on resuming at step %d: the %s schedule continues as the %d-step schedule (warmup %d "+
		"unchanged)", resumed.Total, l.total, resumed.Step, l.cfg.Schedule, l.total, l.cfg.Warmup)
	l.rep.Notes = append(l.rep.Notes, note)
	l.logf("%s", note)
	return nil
}

// openRunLog opens Out/run.jsonl when Config.LogEvery asks for one (l.rlog stays nil,
// which records nothing, otherwise).
func (l *run) openRunLog() error {
	if l.cfg.LogEvery <= 0 {
		return nil
	}
	if err := os.MkdirAll(l.cfg.Out, 0o755); err != nil {
		return err
	}
	var err error
	if l.rlog, err = openRunLog(filepath.Join(l.cfg.Out, "run.jsonl"), l.cfg.LogEvery, l.cfg.GPUMemory, l.cfg.Resume != ""); err != nil {
		return err
	}
	if a, ok := l.b.(arenaSource); ok {
		l.rlog.arena = a
	}
	l.rlog.devices = l.cfg.GPUDevices
	l.rlog.record(l.first-1, "start", 0, 0, 0, 0)
	return nil
}

// evaluate is the evaluation of the Stepper's current adapter after step loop steps (NaN
// loss without evaluation examples).
func (l *run) evaluate(step int) (EvalResult, error) {
	if len(l.evals) == 0 {
		return EvalResult{Step: step, Loss: Float(math.NaN()), Perplexity: Float(math.NaN())}, nil
	}
	values, err := l.stepper.Params()
	if err != nil {
		return EvalResult{}, err
	}
	s, n, err := l.b.Eval(l.evals, values)
	if err != nil {
		return EvalResult{}, err
	}
	r := NewEvalResult(step, s, n)
	if err := l.dump.eval(r); err != nil {
		return EvalResult{}, err
	}
	l.logf("eval @ step %d: loss %.4f, perplexity %.3f (%d tokens)", step, float64(r.Loss), float64(r.Perplexity), r.Tokens)
	return r, nil
}

// noCheckpoint is lastGood before the first checkpoint.
const noCheckpoint = "none (no checkpoint was written yet)"

// step runs loop step `step`: one optimizer step over GradAccum micro-batches, its
// accounting (skips, non-finite stops), then the evaluation and checkpoint due after it.
func (l *run) step(ctx context.Context, step int) error {
	cfg, rep := l.cfg, l.rep
	t0 := time.Now()
	// A cancelled ctx (SIGINT/SIGTERM) abandons this step before its next micro-batch:
	// the stepper's state is untouched, so rewinding the iterator gives exactly the
	// state after step-1.
	pos := l.it.Position()
	lr := cfg.LR * l.sched(step-1)
	in := StepInput{Step: step, LR: lr}
	tokens := int64(0)
	for k := 0; k < cfg.GradAccum; k++ {
		if err := ctx.Err(); err != nil { // a signal while a long step is built
			return l.interrupted(step, pos, err)
		}
		b := l.it.Next()
		in.Batches = append(in.Batches, b)
		in.Seeds = append(in.Seeds, microSeed(cfg.Seed, step, k))
		tokens += int64(b.Tokens)
	}
	out, err := l.stepper.Step(ctx, in)
	if cerr := ctx.Err(); err != nil && cerr != nil {
		return l.interrupted(step, pos, cerr)
	}
	if err != nil {
		return fmt.Errorf("step %d: %w", step, err)
	}
	rep.TrainTokens += tokens
	if err := l.account(step, out); err != nil {
		return err
	}
	if err := l.dump.step(in, out); err != nil {
		return err
	}
	l.losses = append(l.losses, Float(out.Loss))
	l.gradNorms = append(l.gradNorms, Float(out.GradNorm))
	dt := time.Since(t0)
	l.stepTimes = append(l.stepTimes, dt)
	l.trainTime += dt
	tps := float64(rep.TrainTokens) / l.trainTime.Seconds()
	l.prog.Update(ProgressUpdate{Step: step, Loss: out.Loss, TokensPerSec: tps, LR: lr, LossScale: l.stepper.Scale(), GradNorm: out.GradNorm})
	l.rlog.record(step, "step", out.Loss, lr, tps, out.GradNorm)
	if cfg.EvalEvery > 0 && step%cfg.EvalEvery == 0 && step != l.total {
		r, err := l.evaluate(step)
		if err != nil {
			return err
		}
		rep.EvalHistory = append(rep.EvalHistory, r)
	}
	if l.sampleDue(step) {
		if err := l.sample(step); err != nil {
			return err
		}
	}
	if cfg.SaveEvery > 0 && step%cfg.SaveEvery == 0 {
		return l.save(step, l.it.Position())
	}
	return nil
}

// interrupted ends a run whose ctx was cancelled during step: the iterator goes back to
// pos (where step began) and the state after step-1 is checkpointed.
func (l *run) interrupted(step int, pos data.Position, cause error) error {
	l.prog.Stop()
	if err := l.it.SetPosition(pos); err != nil {
		panic("train: rewinding the data iterator: " + err.Error())
	}
	if err := l.save(step-1, pos); err != nil {
		return fmt.Errorf("interrupted at step %d, and the checkpoint failed: %w", step-1, err)
	}
	return &InterruptedError{Step: step - 1, Checkpoint: l.lastGood, Cause: cause}
}

// account counts the step's outcome: an optimizer step, an overflow skip (stopping the run
// after MaxSkips in a row), or a non-finite fp32 step, which stops the run at once.
func (l *run) account(step int, out StepOutcome) error {
	switch {
	case out.NonFinite:
		return fmt.Errorf("step %d: loss or gradients are not finite (loss %v) in fp32: training stopped; the last good checkpoint is %s (lower --lr and "+
			"start a new run, or inspect the data)", step, out.Loss, l.lastGood)
	case out.Skipped:
		l.rep.SkippedSteps++
		l.logf("step %d: non-finite gradients at loss scale %g: step skipped, scale halved", step, out.Scale)
		if out.ConsecutiveSkips >= l.maxSkip {
			return fmt.Errorf("step %d: %d consecutive steps skipped for non-finite loss or gradients (loss scale now %g): training stopped; the last good "+
				"checkpoint is %s (lower --lr or check the data)", step, out.ConsecutiveSkips, l.stepper.Scale(), l.lastGood)
		}
	case !out.NoTokens:
		l.rep.OptimizerSteps++
	}
	return nil
}

// save checkpoints the state after `step` loop steps, the data iterator being at pos
// (nothing when that step is the one saved or resumed from last).
func (l *run) save(step int, pos data.Position) error {
	if step == l.lastSaved {
		return nil
	}
	st, err := l.stepper.State()
	if err != nil {
		return err
	}
	rep := l.rep
	ck := &Checkpoint{
		Step: step, Total: l.total, OptimizerSteps: rep.OptimizerSteps, SkippedSteps: rep.SkippedSteps,
		TrainTokens: rep.TrainTokens, Data: pos, Seed: l.cfg.Seed, Scaler: st.Scaler,
		Losses: l.losses, GradNorms: l.gradNorms, Baseline: rep.Baseline, EvalHistory: rep.EvalHistory,
		TrainTimeNS: int64(l.trainTime), Compat: l.compat, ManifestSHA256: l.manSHA, Config: l.cfg,
	}
	for _, d := range l.stepTimes {
		ck.StepTimesMS = append(ck.StepTimesMS, float64(d)/float64(time.Millisecond))
	}
	dir, err := WriteCheckpoint(l.ckRoot, ck, inManifestOrder(l.params, st.Params), st.Adam, l.cfg.Keep, l.cfg.CheckpointHook)
	if dir != "" {
		l.lastGood, l.lastSaved = dir, step
	}
	if err != nil {
		if l.lastGood == noCheckpoint {
			return fmt.Errorf("%w; no checkpoint was written yet: start the run again once the output is writable", err)
		}
		return fmt.Errorf("%w; the last good checkpoint is %s (resume with --resume latest once the output is writable)", err, l.lastGood)
	}
	return nil
}

// finish checkpoints the last step, evaluates the trained adapter, and writes the adapter
// and the report (JSON and Markdown) into Config.Out.
func (l *run) finish(start time.Time, mon *runreport.RSSMonitor) (*Report, error) {
	rep := l.rep
	l.prog.Finish()
	if err := l.save(l.total, l.it.Position()); err != nil {
		return nil, err
	}
	// Position.Index counts examples (not micro-batches) into the current epoch.
	p := l.it.Position()
	rep.Epochs = Float(float64(p.Epoch) + float64(p.Index)/float64(max(1, len(l.train))))
	var err error
	if rep.Final, err = l.evaluate(rep.OptimizerSteps); err != nil {
		return nil, fmt.Errorf("final evaluation: %w", err)
	}
	rep.EvalHistory = append(rep.EvalHistory, rep.Final)
	if err := l.sample(rep.OptimizerSteps); err != nil {
		return nil, err
	}
	rep.WallTime = time.Since(start)
	if l.trainTime > 0 {
		rep.TokensPerSecond = Float(float64(rep.TrainTokens) / l.trainTime.Seconds())
	}
	if len(l.stepTimes) > 0 {
		if rep.StepTime, err = SummarizeDurations(l.stepTimes); err != nil {
			return nil, err
		}
	}
	rep.GradNorm = SummarizeGradNorms(l.gradNorms, l.cfg.MaxGradNorm)
	rep.PeakRSSBytes = mon.Stop()
	if l.rlog != nil {
		rep.PeakGPUBytes, rep.RunLog = l.rlog.peakGPU, "run.jsonl"
		rep.PeakGPUPerDevice = l.rlog.peakPerDevice
	}
	if err := os.MkdirAll(l.cfg.Out, 0o755); err != nil {
		return nil, err
	}
	final, err := l.stepper.State()
	if err != nil {
		return nil, err
	}
	if err := SaveAdapter(l.cfg.Out, l.man, inManifestOrder(l.params, final.Params)); err != nil {
		return nil, err
	}
	if err := l.dump.close(); err != nil {
		return nil, err
	}
	if err := rep.WriteJSON(filepath.Join(l.cfg.Out, "report.json")); err != nil {
		return nil, err
	}
	if err := rep.WriteMarkdown(filepath.Join(l.cfg.Out, "report.md")); err != nil {
		return nil, err
	}
	return rep, nil
}
