package train

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/train/optim"
)

// Stepper is one optimizer step of the fine-tuning loop, whatever runs it: the micro-batches'
// forward and backward with token-weighted gradient accumulation, the loss scaler's overflow
// check, and AdamW. The loop (Run) and the benchmark drive the same Stepper; NewHostStepper
// keeps parameters and optimizer state in Go memory, NewDeviceStepper keeps them in the
// training session's device memory.
type Stepper interface {
	// Step runs one optimizer step over in.Batches. A cancelled ctx abandons it between
	// micro-batches with ctx's error; the parameters, the optimizer and the scaler are then
	// as they were before the call.
	Step(ctx context.Context, in StepInput) (StepOutcome, error)
	// Params returns a copy of the LoRA values by PEFT name.
	Params() (map[string][]float32, error)
	// State and Restore are the checkpointable state: parameters, AdamW and the scaler.
	State() (StepState, error)
	Restore(StepState) error
	// Scale is the loss scale the next step uses.
	Scale() float32
	Close()
}

// Warmer is a Stepper whose first micro-batches cost more than the others; benchmarks leave
// that many out of their timed steps.
type Warmer interface {
	// WarmupMicroBatches is how many micro-batches (per device) run before the cost settles.
	WarmupMicroBatches() int
}

// StepInput is one optimizer step's work.
type StepInput struct {
	// Step is the loop's optimizer step number (from 1), for fault-injection hooks.
	Step    int
	Batches []data.Batch
	// Seeds are the LoRA dropout seeds of the micro-batches (microSeed), one per batch.
	Seeds []uint64
	// LR is the learning rate of this step (the schedule applied).
	LR float64
}

// StepOutcome is what one optimizer step did.
type StepOutcome struct {
	// Loss is the mean loss over the step's counted tokens (NaN when none).
	Loss float64
	// NoTokens: no micro-batch had a counted label; nothing was updated.
	NoTokens bool
	// Skipped: fp16 gradients overflowed; AdamW did not run and the scale was backed off.
	Skipped bool
	// NonFinite: fp32 (unscaled) training met an Inf/NaN loss or gradient; nothing was
	// updated and the loop must stop.
	NonFinite bool
	// Scale is the loss scale the step ran with; ConsecutiveSkips counts overflow skips in a
	// row, this one included.
	Scale            float32
	ConsecutiveSkips int
	// GradNorm is the L2 norm of all LoRA gradients after unscaling and accumulation, before
	// clipping (what Hugging Face Trainer logs as grad_norm); NaN when the step had no tokens.
	GradNorm float64
}

// StepState is a Stepper's checkpointable state.
type StepState struct {
	Params []optim.Param
	Adam   optim.AdamWState
	Scaler optim.GradScalerState
}

// StepConfig configures a Stepper.
type StepConfig struct {
	AdamW  optim.AdamWConfig
	Scaler optim.GradScalerConfig
	// GradHook, when set, sees the unscaled gradients of each step before the finiteness
	// check and may change them (fault injection for tests; the host stepper only).
	GradHook func(step int, grads map[string][]float32)
	// MaxGradNorm clips the gradients' global L2 norm to this value before AdamW, as
	// torch.nn.utils.clip_grad_norm_ (0: no clipping; the norm is still reported).
	MaxGradNorm float64
}

// tokens is the step's counted labels over all its micro-batches.
func (in StepInput) tokens() int {
	n := 0
	for _, b := range in.Batches {
		n += b.Tokens
	}
	return n
}

// share is the part of the step one of n devices (or ranks) runs: micro-batches k ≡ d
// (mod n), with their dropout seeds.
func (in StepInput) share(d, n int) StepInput {
	out := StepInput{Step: in.Step, LR: in.LR}
	for k := d; k < len(in.Batches); k += n {
		out.Batches, out.Seeds = append(out.Batches, in.Batches[k]), append(out.Seeds, in.Seeds[k])
	}
	return out
}

func (in StepInput) check() error {
	if len(in.Batches) == 0 || len(in.Seeds) != len(in.Batches) {
		return fmt.Errorf("optimizer step %d: %d micro-batches and %d dropout seeds", in.Step, len(in.Batches), len(in.Seeds))
	}
	return nil
}

// hostStepper runs the training graph once per micro-batch, brings the gradients back to Go
// memory, accumulates them in float64 and applies the Go AdamW (torch's arithmetic to the
// last ulp).
type hostStepper struct {
	hostState
	e      *Engine
	values map[string][]float32
	acc    *optim.GradAccumulator
	grads  map[string][]float32
	hook   func(int, map[string][]float32)
}

// NewHostStepper returns the host-memory Stepper over e's training graph, starting from init
// (which it updates in place).
func NewHostStepper(e *Engine, init []optim.Param, cfg StepConfig) (Stepper, error) {
	if e.train == nil {
		return nil, errors.New("host stepper: the engine has no training session")
	}
	hs, err := newHostState(init, cfg)
	if err != nil {
		return nil, err
	}
	s := &hostStepper{hostState: hs, e: e, values: map[string][]float32{},
		acc: optim.NewGradAccumulator(init), grads: map[string][]float32{}, hook: cfg.GradHook}
	for _, p := range init {
		s.values[p.Name] = p.Data
	}
	return s, nil
}

func (s *hostStepper) Step(ctx context.Context, in StepInput) (StepOutcome, error) {
	if err := in.check(); err != nil {
		return StepOutcome{}, err
	}
	s.acc.Reset()
	for k, b := range in.Batches {
		if err := ctx.Err(); err != nil {
			return StepOutcome{}, err
		}
		s.e.DropoutSeed = in.Seeds[k]
		r, div, err := s.e.stepMean(b, s.values, s.scaler.Scale())
		if err != nil {
			return StepOutcome{}, fmt.Errorf("micro-batch %d: %w", k, err)
		}
		if err := s.acc.AddScaled(r.Grads, float64(div), r.LossSum, r.Tokens); err != nil {
			return StepOutcome{}, err
		}
	}
	out := StepOutcome{Scale: s.scaler.Scale()}
	loss, err := s.acc.Finish(s.grads)
	out.Loss = loss
	if errors.Is(err, optim.ErrNoTokens) {
		out.NoTokens, out.GradNorm = true, math.NaN()
		return out, nil
	}
	if err != nil {
		return out, err
	}
	inf := s.scaler.UnscaleMap(s.grads)
	if s.hook != nil {
		s.hook(in.Step, s.grads)
		inf = inf || !allFinite(s.grads)
	}
	out.GradNorm = optim.ClipGrads(s.params, s.grads, s.maxNorm)
	err = finishStep(s.scaler, &out, inf, func() error { return s.opt.Step(s.grads, in.LR) })
	return out, err
}

// finishStep is the loss scaler's verdict on a step whose unscaled gradients hold a
// non-finite value (inf) or whose mean loss out.Loss is not finite: in fp32 training the
// step is NonFinite and nothing changes (the loop stops); in fp16 it is Skipped and the scale
// backs off; otherwise apply runs the update. Every stepper ends its step here.
func finishStep(scaler *optim.GradScaler, out *StepOutcome, inf bool, apply func() error) error {
	inf = inf || math.IsNaN(out.Loss) || math.IsInf(out.Loss, 0)
	if inf && !scaler.Enabled() {
		out.NonFinite = true
		return nil
	}
	if inf {
		out.Skipped = true
	} else if err := apply(); err != nil {
		return err
	}
	scaler.Update(inf)
	out.ConsecutiveSkips = scaler.ConsecutiveSkips()
	return nil
}

// hostState is the optimizer state a Stepper keeps in Go memory: the LoRA weights (the
// master copy AdamW updates in place), AdamW and the loss scaler. It gives those steppers
// their Params, State, Restore and Scale.
type hostState struct {
	params []optim.Param
	opt    *optim.AdamW
	scaler *optim.GradScaler
	// maxNorm is StepConfig.MaxGradNorm.
	maxNorm float64
}

// newHostState starts AdamW and the scaler over init (updated in place).
func newHostState(init []optim.Param, cfg StepConfig) (hostState, error) {
	opt, err := optim.NewAdamW(init, cfg.AdamW)
	if err != nil {
		return hostState{}, err
	}
	scaler, err := optim.NewGradScaler(cfg.Scaler)
	if err != nil {
		return hostState{}, err
	}
	if !(cfg.MaxGradNorm >= 0) || math.IsInf(cfg.MaxGradNorm, 0) {
		return hostState{}, fmt.Errorf("invalid max gradient norm %v: must be ≥ 0 and finite", cfg.MaxGradNorm)
	}
	return hostState{params: init, opt: opt, scaler: scaler, maxNorm: cfg.MaxGradNorm}, nil
}

func (s *hostState) Params() (map[string][]float32, error) {
	out := make(map[string][]float32, len(s.params))
	for _, p := range s.params {
		out[p.Name] = append([]float32(nil), p.Data...)
	}
	return out, nil
}

func (s *hostState) State() (StepState, error) {
	ps := make([]optim.Param, len(s.params))
	for i, p := range s.params {
		ps[i] = optim.Param{Name: p.Name, Data: append([]float32(nil), p.Data...), NoDecay: p.NoDecay}
	}
	return StepState{Params: ps, Adam: s.opt.State(), Scaler: s.scaler.State()}, nil
}

func (s *hostState) Restore(st StepState) error {
	if err := copyParams(s.params, st.Params); err != nil {
		return err
	}
	if err := s.opt.LoadState(st.Adam); err != nil {
		return err
	}
	return s.scaler.LoadState(st.Scaler)
}

func (s *hostState) Scale() float32 { return s.scaler.Scale() }

// Close releases nothing: the training session is the engine's.
func (s *hostStepper) Close() {}

// copyParams copies src's values into dst by name; every dst tensor must be in src with
// its length.
func copyParams(dst, src []optim.Param) error {
	by := make(map[string][]float32, len(src))
	for _, p := range src {
		by[p.Name] = p.Data
	}
	for _, p := range dst {
		v, ok := by[p.Name]
		if !ok || len(v) != len(p.Data) {
			return fmt.Errorf("LoRA tensor %q missing or of the wrong size", p.Name)
		}
		copy(p.Data, v)
	}
	return nil
}
