package train

import (
	"context"
	"errors"
	"fmt"
	"math"

	"golang.org/x/sync/errgroup"
)

// multiStepper is data parallelism over the devices of one host: one Engine (training
// session) per device, each optimizer step's micro-batches spread over them and run
// concurrently, the gradients reduced on the host and one AdamW update that every engine
// uses next step.
//
// The reduction is the host stepper's accumulation, not an average of per-device means:
// every micro-batch's d(loss_sum·scale)/dθ enters one float64 GradAccumulator in micro-batch
// order, whichever device ran it, and Finish divides by the step's total label tokens. With
// the dropout seed of micro-batch k being in.Seeds[k] on any device, a step on N devices
// adds the same float32 gradients in the same order as one device does: the result does not
// depend on the device count. LoRA gradients are small (≈11 MB fp32 for q/v r=8 on the 3B
// shape), so bringing them to Go memory costs little beside a step.
type multiStepper struct {
	*hostStepper // parameters, AdamW, the one GradScaler, the accumulator; State/Restore/Params
	engines      []*Engine
}

// microResult is one micro-batch's gradients as a device returned them.
type microResult struct {
	k   int
	r   *StepResult
	div int
}

// NewMultiStepper returns the Stepper that spreads each step's micro-batches over engines
// (one per device, each with a training session over the same artifacts), starting from
// init, which it updates in place. Micro-batch k runs on engines[k mod len(engines)].
// One engine behaves as the host stepper.
func NewMultiStepper(engines []*Engine, init []Param, cfg StepConfig) (Stepper, error) {
	if len(engines) == 0 {
		return nil, errors.New("multi-device step: no engine")
	}
	for i, e := range engines {
		if e == nil || e.train == nil {
			return nil, fmt.Errorf("multi-device step: engine %d has no training session (the device-resident step cannot be shared)", i)
		}
		if e.Dir != engines[0].Dir || e.trainGraph.File != engines[0].trainGraph.File {
			return nil, fmt.Errorf("multi-device step: engine %d runs %s of %q, engine 0 %s of %q", i, e.trainGraph.File, e.Dir, engines[0].trainGraph.File, engines[0].Dir)
		}
	}
	st, err := NewHostStepper(engines[0], init, cfg)
	if err != nil {
		return nil, err
	}
	return &multiStepper{hostStepper: st.(*hostStepper), engines: engines}, nil
}

func (s *multiStepper) Step(ctx context.Context, in StepInput) (StepOutcome, error) {
	if err := in.check(); err != nil {
		return StepOutcome{}, err
	}
	if err := s.accumulate(ctx, in); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return StepOutcome{}, cerr
		}
		return StepOutcome{}, err
	}
	return s.update(in)
}

// accumulate runs the micro-batches, one goroutine per device, and adds their gradients to
// s.acc in micro-batch order as they arrive. Devices advance round-robin, so only about one
// result per device waits for its predecessors.
func (s *multiStepper) accumulate(ctx context.Context, in StepInput) error {
	s.acc.Reset()
	n, scale := len(s.engines), s.scaler.Scale()
	results := make(chan microResult, len(in.Batches)) // never blocks a device
	g, gctx := errgroup.WithContext(ctx)
	for d, e := range s.engines[:min(n, len(in.Batches))] {
		g.Go(func() error {
			for k := d; k < len(in.Batches); k += n {
				if err := gctx.Err(); err != nil {
					return err
				}
				// Each engine is used by this goroutine alone; the parameters are only read.
				e.DropoutSeed = in.Seeds[k]
				r, div, err := e.stepMean(in.Batches[k], s.values, scale)
				if err != nil {
					return fmt.Errorf("micro-batch %d on %s: %w", k, e.Opts.Device, err)
				}
				results <- microResult{k: k, r: r, div: div}
			}
			return nil
		})
	}
	var werr error
	go func() { werr = g.Wait(); close(results) }()
	pending := map[int]microResult{}
	next := 0
	var aerr error
	for res := range results {
		pending[res.k] = res
		for p, ok := pending[next]; ok; p, ok = pending[next] {
			delete(pending, next)
			next++
			if aerr == nil {
				aerr = s.acc.AddScaled(p.r.Grads, float64(p.div), p.r.LossSum, p.r.Tokens)
			}
		}
	}
	switch {
	case werr != nil:
		return werr
	case aerr != nil:
		return aerr
	case next != len(in.Batches):
		return fmt.Errorf("multi-device step: %d of %d micro-batches reduced", next, len(in.Batches))
	}
	return nil
}

// update is the host stepper's end of a step on the reduced gradients: the mean, the
// unscale, one overflow decision for every device, and one AdamW step.
func (s *multiStepper) update(in StepInput) (StepOutcome, error) {
	out := StepOutcome{Scale: s.scaler.Scale()}
	loss, err := s.acc.Finish(s.grads)
	out.Loss = loss
	if errors.Is(err, ErrNoTokens) {
		out.NoTokens = true
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
	inf = inf || math.IsNaN(loss) || math.IsInf(loss, 0)
	if inf && !s.scaler.Enabled() {
		out.NonFinite = true
		return out, nil
	}
	if inf {
		out.Skipped = true
	} else if err := s.opt.Step(s.grads, in.LR); err != nil {
		return out, err
	}
	s.scaler.Update(inf)
	out.ConsecutiveSkips = s.scaler.ConsecutiveSkips()
	return out, nil
}
