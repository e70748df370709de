package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/ortq/ortq/data"
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
	FP16  bool `json:"fp16"`
	Quiet bool `json:"-"`
	// Log receives one line per event (evaluations, skipped steps); nil = stderr.
	Log io.Writer `json:"-"`
}

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
	if err != nil {
		return nil, err
	}
	adamCfg := DefaultAdamWConfig()
	adamCfg.LR, adamCfg.WeightDecay = cfg.LR, cfg.WeightDecay
	opt, err := NewAdamW(params, adamCfg)
	if err != nil {
		return nil, err
	}
	sched, err := NewSchedule(cfg.Schedule, cfg.Warmup, total)
	if err != nil {
		return nil, err
	}
	scfg := DefaultGradScalerConfig()
	scfg.Disabled = !cfg.FP16
	scaler, err := NewGradScaler(scfg)
	if err != nil {
		return nil, err
	}
	values := map[string][]float32{}
	for _, p := range params {
		values[p.Name] = p.Data
	}
	rep := &Report{Config: cfg, StartedAt: time.Now()}
	mon := NewRSSMonitor(200*time.Millisecond, nil)
	mon.Start()
	defer mon.Stop()

	evaluate := func(step int) (EvalResult, error) {
		if len(evalBatches) == 0 {
			return EvalResult{Step: step, Loss: Float(math.NaN()), Perplexity: Float(math.NaN())}, nil
		}
		s, n, err := e.Eval(evalBatches, values)
		if err != nil {
			return EvalResult{}, err
		}
		r := NewEvalResult(step, s, n)
		logf("eval @ step %d: loss %.4f, perplexity %.3f (%d tokens)", step, float64(r.Loss), float64(r.Perplexity), r.Tokens)
		return r, nil
	}
	if rep.Baseline, err = evaluate(0); err != nil {
		return nil, fmt.Errorf("baseline evaluation: %w", err)
	}
	rep.EvalHistory = append(rep.EvalHistory, rep.Baseline)

	acc := NewGradAccumulator(params)
	grads := map[string][]float32{}
	prog := NewProgress(ProgressOptions{Total: total, Quiet: cfg.Quiet, Writer: log})
	var stepTimes []time.Duration
	var trainTime time.Duration
	start := time.Now()
	for step := 1; step <= total; step++ {
		if err := ctx.Err(); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("stopped at step %d: %v", step-1, err))
			break
		}
		t0 := time.Now()
		acc.Reset()
		for k := 0; k < cfg.GradAccum; k++ {
			b := it.Next()
			r, err := e.Step(b, values, scaler.Scale())
			if err != nil {
				return nil, fmt.Errorf("step %d micro-batch %d: %w", step, k, err)
			}
			if err := acc.Add(r.Grads, r.LossSum, r.Tokens); err != nil {
				return nil, err
			}
			rep.TrainTokens += int64(b.Tokens)
		}
		loss, err := acc.Finish(grads)
		if errors.Is(err, ErrNoTokens) {
			continue
		} else if err != nil {
			return nil, err
		}
		inf := scaler.UnscaleMap(grads)
		if inf || math.IsNaN(loss) || math.IsInf(loss, 0) {
			if !scaler.Enabled() {
				return nil, fmt.Errorf("step %d: loss or gradients are not finite (loss %v) in fp32: lower --lr", step, loss)
			}
			rep.SkippedSteps++
			logf("step %d: non-finite gradients at loss scale %g: step skipped, scale halved", step, scaler.Scale())
		} else {
			if err := opt.Step(grads, cfg.LR*sched(step-1)); err != nil {
				return nil, err
			}
			rep.OptimizerSteps++
		}
		scaler.Update(inf)
		dt := time.Since(t0)
		stepTimes = append(stepTimes, dt)
		trainTime += dt
		tps := float64(rep.TrainTokens) / trainTime.Seconds()
		prog.Update(ProgressUpdate{Step: step, Loss: loss, TokensPerSec: tps, LR: cfg.LR * sched(step-1), LossScale: scaler.Scale()})
		if cfg.EvalEvery > 0 && step%cfg.EvalEvery == 0 && step != total {
			r, err := evaluate(step)
			if err != nil {
				return nil, err
			}
			rep.EvalHistory = append(rep.EvalHistory, r)
		}
	}
	prog.Finish()
	rep.Epochs = Float(float64(it.Position().Epoch) + float64(it.Position().Index)/float64(max(1, it.BatchesPerEpoch())))
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
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	if err := SaveAdapter(cfg.Out, e.Man, params); err != nil {
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

// LoadParams reads LoRA values (PEFT names) from a safetensors file and checks them
// against the manifest.
func LoadParams(path string, man *manifest.Manifest) ([]Param, error) {
	f, err := ReadSafetensors(path)
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
	ts := make([]Tensor, 0, len(params))
	for _, p := range params {
		ts = append(ts, F32Tensor(p.Name, shapes[p.Name], p.Data))
	}
	if err := WriteSafetensors(filepath.Join(dir, "adapter_model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return writeAdapterConfig(filepath.Join(dir, "adapter_config.json"), man)
}
