package train

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
)

// Config is everything `ortq train` decides before the loop starts.
type Config struct {
	Artifacts   string  `json:"artifacts"`
	Out         string  `json:"out"`
	Device      string  `json:"device"`
	MicroBatch  int     `json:"micro_batch"`
	GradAccum   int     `json:"grad_accum"`
	Epochs      float64 `json:"epochs"`
	MaxSteps    int     `json:"max_steps"`
	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"weight_decay"`
	Schedule    string  `json:"schedule"`
	Warmup      int     `json:"warmup_steps"`
	EvalEvery   int     `json:"eval_every"`
	// MaxEvalBatches caps each evaluation (0 = the whole eval split).
	MaxEvalBatches int    `json:"max_eval_batches"`
	PadMultiple    int    `json:"pad_multiple"`
	Seed           uint64 `json:"seed"`
	// FP16 enables dynamic loss scaling (GradScaler); fp32 graphs train unscaled.
	FP16 bool `json:"fp16"`
	// SaveEvery writes a checkpoint every N loop steps (0: only at the end and on
	// interruption); Keep is how many step directories stay (0 = all).
	SaveEvery int `json:"save_every"`
	Keep      int `json:"keep"`
	// MaxSkips stops an fp16 run after this many consecutive overflow-skipped steps
	// (0 = DefaultMaxSkips).
	MaxSkips int `json:"max_skips"`
	// Resume continues from a checkpoint directory, or "latest" for the newest under
	// Out/checkpoints ("" = a fresh run, which refuses an Out that has checkpoints).
	Resume string `json:"-"`
	// InitAdapter is a PEFT adapter directory the LoRA weights start from ("" = lora_init).
	InitAdapter string `json:"init_adapter,omitempty"`
	// Inputs are caller-known facts a resume must match (data file hashes, --max-seq-len,
	// tokenizer hash), keyed by the option that sets them.
	Inputs map[string]string `json:"inputs,omitempty"`
	Quiet  bool              `json:"-"`
	// LogEvery writes a line to Out/run.jsonl every N optimizer steps and at memory peaks
	// (0 = no run log). GPUMemory, when set, adds GPU memory to it.
	LogEvery  int                                  `json:"log_every"`
	GPUMemory func() (used, total uint64, ok bool) `json:"-"`
	// Log receives one line per event (evaluations, skipped steps); nil = stderr.
	Log io.Writer `json:"-"`

	// Fault-injection hooks for tests (nil in normal runs). GradHook sees the unscaled
	// gradients of each loop step before the finiteness check and may change them.
	GradHook func(step int, grads map[string][]float32) `json:"-"`
	// NewStepper, when set, makes the run's Stepper instead of the engine's own
	// (Engine.NewStepper): how a run spreads its micro-batches over several devices, or a
	// test drives the loop without ONNX Runtime.
	NewStepper     func(init []Param, sc StepConfig, rows, seq int) (Stepper, error) `json:"-"`
	CheckpointHook CheckpointHook                                                    `json:"-"`
}

// DefaultMaxSkips is Config.MaxSkips's default.
const DefaultMaxSkips = 10

// InterruptedError is what Run returns when ctx is cancelled (SIGINT/SIGTERM): the
// current optimizer step was abandoned and the state after Step saved to Checkpoint.
type InterruptedError struct {
	Step       int
	Checkpoint string
	Cause      error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted at step %d (%v); checkpoint %s", e.Step, e.Cause, e.Checkpoint)
}

func (e *InterruptedError) Unwrap() error { return e.Cause }

// Run is the fine-tuning loop: baseline evaluation, optimizer steps of GradAccum
// token-weighted micro-batches with AdamW and a warmup schedule, periodic and final
// evaluation, then the adapter and the run report in cfg.Out.
func Run(ctx context.Context, e *Engine, trainSet, evalSet []data.Example, cfg Config) (*Report, error) {
	if cfg.MicroBatch <= 0 || cfg.GradAccum <= 0 {
		return nil, fmt.Errorf("--micro-batch and --grad-accum must be positive")
	}
	log := cfg.Log
	if log == nil {
		log = os.Stderr
	}
	logf := func(format string, a ...any) { fmt.Fprintf(log, format+"\n", a...) }
	bopts := data.BatchOptions{BatchSize: cfg.MicroBatch, PadMultiple: cfg.PadMultiple}
	it, err := data.NewIterator(trainSet, bopts, cfg.Seed)
	if err != nil {
		return nil, err
	}
	evalBatches, err := data.Batches(evalSet, bopts)
	if err != nil {
		return nil, err
	}
	if cfg.MaxEvalBatches > 0 && len(evalBatches) > cfg.MaxEvalBatches {
		evalBatches = evalBatches[:cfg.MaxEvalBatches]
	}
	perEpoch := (it.BatchesPerEpoch() + cfg.GradAccum - 1) / cfg.GradAccum
	total := cfg.MaxSteps
	if total <= 0 {
		ep := cfg.Epochs
		if ep <= 0 {
			ep = 1
		}
		total = int(math.Ceil(ep * float64(perEpoch)))
	}
	if total <= 0 {
		return nil, fmt.Errorf("no optimizer steps to run: %d training examples", len(trainSet))
	}
	params, err := LoadParams(filepath.Join(e.Dir, e.Man.LoRAInit), e.Man)
	if err == nil && cfg.InitAdapter != "" {
		params, err = LoadInitParams(cfg.InitAdapter, e.Man) // --init-adapter: start from a PEFT adapter
	}
	if err != nil {
		return nil, err
	}
	sched, err := NewSchedule(cfg.Schedule, cfg.Warmup, total)
	if err != nil {
		return nil, err
	}
	newStepper := e.NewStepper
	if cfg.NewStepper != nil {
		newStepper = cfg.NewStepper
	}
	stepper, err := newStepper(params, cfg.stepConfig(), cfg.MicroBatch, maxBatchSeq(trainSet, cfg.PadMultiple))
	if err != nil {
		return nil, err
	}
	defer stepper.Close()
	maxSkips := cfg.MaxSkips
	if maxSkips <= 0 {
		maxSkips = DefaultMaxSkips
	}

	// Checkpoint bookkeeping: what a resume must match, and the newest checkpoint known
	// to be good (named when the run has to stop).
	ckRoot := filepath.Join(cfg.Out, CheckpointsDir)
	manSHA, err := fileSHA256(filepath.Join(e.Dir, manifest.ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("artifacts %q: %w", e.Dir, err)
	}
	compat := compatFingerprint(cfg, manSHA, total, trainSet)
	if removed, err := CleanCheckpointTemp(ckRoot); err != nil {
		return nil, err
	} else if len(removed) > 0 {
		logf("removed %d unfinished checkpoint write(s) in %s (%s)", len(removed), ckRoot, strings.Join(removed, ", "))
	}
	var resumed *Checkpoint
	switch cfg.Resume {
	case "":
		if dirs, err := ListCheckpoints(ckRoot); err != nil {
			return nil, err
		} else if len(dirs) > 0 {
			return nil, fmt.Errorf("%q already holds checkpoints (newest %s): pass --resume latest to continue that run, --force to discard them, or choose another --out", ckRoot, filepath.Base(dirs[len(dirs)-1]))
		}
	case "latest":
		if resumed, err = LatestCheckpoint(ckRoot, logf); err != nil {
			return nil, err
		}
	default:
		if resumed, err = LoadCheckpoint(cfg.Resume); err != nil {
			return nil, err
		}
	}

	rep := &Report{Config: cfg, StartedAt: time.Now(), Notes: append([]string(nil), e.Notes...)}
	for _, n := range e.Notes {
		logf("%s", n)
	}
	mon := NewRSSMonitor(200*time.Millisecond, nil)
	mon.Start()
	defer mon.Stop()

	evaluate := func(step int) (EvalResult, error) {
		if len(evalBatches) == 0 {
			return EvalResult{Step: step, Loss: Float(math.NaN()), Perplexity: Float(math.NaN())}, nil
		}
		values, err := stepper.Params()
		if err != nil {
			return EvalResult{}, err
		}
		s, n, err := e.Eval(evalBatches, values)
		if err != nil {
			return EvalResult{}, err
		}
		r := NewEvalResult(step, s, n)
		logf("eval @ step %d: loss %.4f, perplexity %.3f (%d tokens)", step, float64(r.Loss), float64(r.Perplexity), r.Tokens)
		return r, nil
	}

	var losses []Float
	var stepTimes []time.Duration
	var trainTime time.Duration
	first := 1
	lastGood := "none (no checkpoint was written yet)"
	if resumed != nil {
		if err := checkCompat(resumed.Dir, resumed.Compat, compat); err != nil {
			return nil, err
		}
		st := StepState{Adam: resumed.Adam, Scaler: resumed.Scaler}
		for _, p := range params {
			st.Params = append(st.Params, Param{Name: p.Name, Data: resumed.Params[p.Name]})
		}
		if err := stepper.Restore(st); err != nil {
			return nil, fmt.Errorf("checkpoint %q: %w", resumed.Dir, err)
		}
		if err := it.SetPosition(resumed.Data); err != nil {
			return nil, fmt.Errorf("checkpoint %q: %w", resumed.Dir, err)
		}
		rep.Baseline = resumed.Baseline
		rep.EvalHistory = append(rep.EvalHistory, resumed.EvalHistory...)
		rep.OptimizerSteps, rep.SkippedSteps, rep.TrainTokens = resumed.OptimizerSteps, resumed.SkippedSteps, resumed.TrainTokens
		losses = append(losses, resumed.Losses...)
		for _, ms := range resumed.StepTimesMS {
			stepTimes = append(stepTimes, time.Duration(ms*float64(time.Millisecond)))
		}
		trainTime = time.Duration(resumed.TrainTimeNS)
		first = resumed.Step + 1
		lastGood = resumed.Dir
		rep.Notes = append(rep.Notes, fmt.Sprintf("resumed from %s after step %d", resumed.Dir, resumed.Step))
		logf("resuming from %s: step %d of %d", resumed.Dir, resumed.Step, total)
	} else {
		if rep.Baseline, err = evaluate(0); err != nil {
			return nil, fmt.Errorf("baseline evaluation: %w", err)
		}
		rep.EvalHistory = append(rep.EvalHistory, rep.Baseline)
	}

	// save writes the state after `step` loop steps, the data iterator being at pos.
	lastSaved := -1
	if resumed != nil {
		lastSaved = resumed.Step
	}
	save := func(step int, pos data.Position) error {
		if step == lastSaved {
			return nil
		}
		st, err := stepper.State()
		if err != nil {
			return err
		}
		ck := &Checkpoint{
			Step: step, Total: total, OptimizerSteps: rep.OptimizerSteps, SkippedSteps: rep.SkippedSteps,
			TrainTokens: rep.TrainTokens, Data: pos, Seed: cfg.Seed, Scaler: st.Scaler,
			Losses: losses, Baseline: rep.Baseline, EvalHistory: rep.EvalHistory,
			TrainTimeNS: int64(trainTime), Compat: compat, ManifestSHA256: manSHA, Config: cfg,
		}
		for _, d := range stepTimes {
			ck.StepTimesMS = append(ck.StepTimesMS, float64(d)/float64(time.Millisecond))
		}
		dir, err := WriteCheckpoint(ckRoot, ck, inManifestOrder(params, st.Params), st.Adam, cfg.Keep, cfg.CheckpointHook)
		if dir != "" {
			lastGood, lastSaved = dir, step
		}
		if err != nil {
			return fmt.Errorf("%w; the last good checkpoint is %s (resume with --resume latest once the output is writable)", err, lastGood)
		}
		return nil
	}

	prog := NewProgress(ProgressOptions{Total: total, Quiet: cfg.Quiet, Writer: log, Start: first - 1})
	var rlog *runLog
	if cfg.LogEvery > 0 {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return nil, err
		}
		if rlog, err = openRunLog(filepath.Join(cfg.Out, "run.jsonl"), cfg.LogEvery, cfg.GPUMemory, cfg.Resume != ""); err != nil {
			return nil, err
		}
		defer rlog.close()
		rlog.record(first-1, "start", 0, 0, 0)
	}
	start := time.Now()
	for step := first; step <= total; step++ {
		t0 := time.Now()
		// A cancelled ctx (SIGINT/SIGTERM) abandons this step before its next micro-batch:
		// the stepper's state is untouched, so rewinding the iterator gives exactly the
		// state after step-1.
		pos := it.Position()
		in := StepInput{Step: step, LR: cfg.LR * sched(step-1)}
		tokens := int64(0)
		for k := 0; k < cfg.GradAccum; k++ {
			b := it.Next()
			in.Batches = append(in.Batches, b)
			in.Seeds = append(in.Seeds, microSeed(cfg.Seed, step, k))
			tokens += int64(b.Tokens)
		}
		out, err := stepper.Step(ctx, in)
		if cerr := ctx.Err(); err != nil && cerr != nil {
			prog.Stop()
			if err := it.SetPosition(pos); err != nil {
				panic("train: rewinding the data iterator: " + err.Error())
			}
			if err := save(step-1, pos); err != nil {
				return nil, fmt.Errorf("interrupted at step %d, and the checkpoint failed: %w", step-1, err)
			}
			return nil, &InterruptedError{Step: step - 1, Checkpoint: lastGood, Cause: cerr}
		}
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", step, err)
		}
		rep.TrainTokens += tokens
		loss := out.Loss
		switch {
		case out.NonFinite:
			return nil, fmt.Errorf("step %d: loss or gradients are not finite (loss %v) in fp32: training stopped; the last good checkpoint is %s (lower --lr and start a new run, or inspect the data)", step, loss, lastGood)
		case out.Skipped:
			rep.SkippedSteps++
			logf("step %d: non-finite gradients at loss scale %g: step skipped, scale halved", step, out.Scale)
			if out.ConsecutiveSkips >= maxSkips {
				return nil, fmt.Errorf("step %d: %d consecutive steps skipped for non-finite loss or gradients (loss scale now %g): training stopped; the last good checkpoint is %s (lower --lr or check the data)", step, out.ConsecutiveSkips, stepper.Scale(), lastGood)
			}
		case !out.NoTokens:
			rep.OptimizerSteps++
		}
		losses = append(losses, Float(loss))
		dt := time.Since(t0)
		stepTimes = append(stepTimes, dt)
		trainTime += dt
		tps := float64(rep.TrainTokens) / trainTime.Seconds()
		prog.Update(ProgressUpdate{Step: step, Loss: loss, TokensPerSec: tps, LR: cfg.LR * sched(step-1), LossScale: stepper.Scale()})
		rlog.record(step, "step", loss, cfg.LR*sched(step-1), tps)
		if cfg.EvalEvery > 0 && step%cfg.EvalEvery == 0 && step != total {
			r, err := evaluate(step)
			if err != nil {
				return nil, err
			}
			rep.EvalHistory = append(rep.EvalHistory, r)
		}
		if cfg.SaveEvery > 0 && step%cfg.SaveEvery == 0 {
			if err := save(step, it.Position()); err != nil {
				return nil, err
			}
		}
	}
	prog.Finish()
	if err := save(total, it.Position()); err != nil {
		return nil, err
	}
	// Position.Index counts examples (not micro-batches) into the current epoch.
	rep.Epochs = Float(float64(it.Position().Epoch) + float64(it.Position().Index)/float64(max(1, len(trainSet))))
	if rep.Final, err = evaluate(rep.OptimizerSteps); err != nil {
		return nil, fmt.Errorf("final evaluation: %w", err)
	}
	rep.EvalHistory = append(rep.EvalHistory, rep.Final)
	rep.WallTime = time.Since(start)
	if trainTime > 0 {
		rep.TokensPerSecond = Float(float64(rep.TrainTokens) / trainTime.Seconds())
	}
	if len(stepTimes) > 0 {
		if rep.StepTime, err = SummarizeDurations(stepTimes); err != nil {
			return nil, err
		}
	}
	rep.PeakRSSBytes = mon.Stop()
	if rlog != nil {
		rep.PeakGPUBytes, rep.RunLog = rlog.peakGPU, "run.jsonl"
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	final, err := stepper.State()
	if err != nil {
		return nil, err
	}
	if err := SaveAdapter(cfg.Out, e.Man, inManifestOrder(params, final.Params)); err != nil {
		return nil, err
	}
	if err := rep.WriteJSON(filepath.Join(cfg.Out, "report.json")); err != nil {
		return nil, err
	}
	if err := rep.WriteMarkdown(filepath.Join(cfg.Out, "report.md")); err != nil {
		return nil, err
	}
	return rep, nil
}

func allFinite(grads map[string][]float32) bool {
	for _, g := range grads {
		for _, v := range g {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return false
			}
		}
	}
	return true
}

// LoadParams reads LoRA values (PEFT names) from a safetensors file and checks them
// against the manifest.
func LoadParams(path string, man *manifest.Manifest) ([]Param, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Param
	for _, p := range man.Params {
		t, ok := f.Get(p.Name)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %q missing", path, p.Name)
		}
		v, err := t.Float32s()
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", path, p.Name, err)
		}
		if int64(len(v)) != p.Shape[0]*p.Shape[1] {
			return nil, fmt.Errorf("%s: tensor %q has %d values, want %v", path, p.Name, len(v), p.Shape)
		}
		out = append(out, Param{Name: p.Name, Data: v})
	}
	return out, nil
}

// SaveAdapter writes the trained LoRA tensors as PEFT does: adapter_model.safetensors
// (names without the adapter name, fp32) and adapter_config.json.
func SaveAdapter(dir string, man *manifest.Manifest, params []Param) error {
	shapes := map[string][]int64{}
	for _, p := range man.Params {
		shapes[p.Name] = p.Shape
	}
	ts := make([]safetensors.Tensor, 0, len(params))
	for _, p := range params {
		ts = append(ts, safetensors.F32Tensor(p.Name, shapes[p.Name], p.Data))
	}
	if err := safetensors.Write(filepath.Join(dir, "adapter_model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return writeAdapterConfig(filepath.Join(dir, "adapter_config.json"), man)
}

// microSeed is the LoRA dropout seed of micro-batch k of optimizer step `step`: a function
// of the run's seed and that position only, so a resumed run draws the masks the
// uninterrupted run drew.
func microSeed(seed uint64, step, k int) uint64 {
	return rand.New(rand.NewPCG(seed, uint64(step)<<32|uint64(k))).Uint64()
}

// stepConfig is the Stepper configuration of a run: torch's AdamW with the run's learning
// rate and weight decay, and dynamic loss scaling for fp16.
func (cfg Config) stepConfig() StepConfig {
	sc := StepConfig{AdamW: DefaultAdamWConfig(), Scaler: DefaultGradScalerConfig(), GradHook: cfg.GradHook}
	sc.AdamW.LR, sc.AdamW.WeightDecay = cfg.LR, cfg.WeightDecay
	sc.Scaler.Disabled = !cfg.FP16
	return sc
}

// maxBatchSeq is the longest batch the examples make: the longest example rounded up to
// the pad multiple, as data.MakeBatch pads.
func maxBatchSeq(examples []data.Example, padMultiple int) int {
	n := 2
	for _, e := range examples {
		n = max(n, len(e))
	}
	if padMultiple > 1 {
		n = (n + padMultiple - 1) / padMultiple * padMultiple
	}
	return n
}

// inManifestOrder returns values' tensors in the order of order (the manifest's), so that
// checkpoints and adapters list them alike whichever stepper produced them.
func inManifestOrder(order, values []Param) []Param {
	by := make(map[string]Param, len(values))
	for _, p := range values {
		by[p.Name] = p
	}
	out := make([]Param, 0, len(order))
	for _, p := range order {
		if v, ok := by[p.Name]; ok {
			out = append(out, v)
		}
	}
	return out
}
