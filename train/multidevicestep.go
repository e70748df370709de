package train

import (
	"context"
	"errors"
	"fmt"
	"math"

	"golang.org/x/sync/errgroup"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train/optim"
)

// multiDeviceStepper is data parallelism over device-resident steps: each device's step
// graph (train_step.onnx, captured in CUDA graphs where its engine does) accumulates the
// gradient sum of its share of the micro-batches in its own memory and never applies AdamW
// there; the host adds the devices' sums, makes the one overflow decision and runs the one
// AdamW, and every device receives the new LoRA weights at the start of the next step. Per
// step and device the weights go in and the gradient sum comes out (≈9 MB each for q/v r=8
// on the 3B shape); the micro-batches themselves never leave the devices' graphs.
//
// The device graph seeds each micro-batch's backward with loss scale ÷ the step's tokens, so
// the devices' sums add up to the step's mean-loss gradient times the scale, as on one
// device; they are added in float64 in device order.
type multiDeviceStepper struct {
	hostState
	devs  []*deviceStepper
	grads map[string][]float32
}

// NewMultiDeviceStepper returns the Stepper over engines opened with EngineOptions.DeviceStep
// (one per device), for batches of at most rows × seq, starting from init (updated in place).
func NewMultiDeviceStepper(engines []*Engine, init []optim.Param, cfg StepConfig, rows, seq int) (Stepper, error) {
	if len(engines) == 0 {
		return nil, errors.New("multi-device step: no engines")
	}
	if cfg.GradHook != nil {
		return nil, errors.New("multi-device step: gradient hooks need the host stepper")
	}
	hs, err := newHostState(init, cfg)
	if err != nil {
		return nil, err
	}
	s := &multiDeviceStepper{hostState: hs, grads: map[string][]float32{}}
	for i, e := range engines {
		d, err := NewDeviceStepper(e, init, cfg, rows, seq)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("device %d (%s): %w", i, e.Opts.Device, err)
		}
		s.devs = append(s.devs, d.(*deviceStepper))
	}
	return s, nil
}

func (s *multiDeviceStepper) Step(ctx context.Context, in StepInput) (StepOutcome, error) {
	if err := in.check(); err != nil {
		return StepOutcome{}, err
	}
	total := in.tokens()
	out := StepOutcome{Scale: s.scaler.Scale()}
	active, err := s.accumulate(ctx, in, total)
	if err != nil {
		return StepOutcome{}, err
	}
	lossSum, tokens, err := s.reduce(active)
	if err != nil {
		return StepOutcome{}, err
	}
	if total == 0 {
		out.Loss, out.NoTokens, out.GradNorm = math.NaN(), true, math.NaN()
		return out, nil
	}
	if int(tokens) != total {
		return StepOutcome{}, fmt.Errorf("the devices counted %g tokens, the batches %d", tokens, total)
	}
	out.Loss = lossSum / tokens
	inf := s.scaler.UnscaleMap(s.grads)
	out.GradNorm = optim.ClipGrads(s.params, s.grads, s.maxNorm)
	err = finishStep(s.scaler, &out, inf, func() error { return s.opt.Step(s.grads, in.LR) })
	return out, err
}

// accumulate uploads the weights to every device and runs micro-batch k on device
// k mod N, the devices at the same time; it returns the devices that ran any.
func (s *multiDeviceStepper) accumulate(ctx context.Context, in StepInput, total int) ([]*deviceStepper, error) {
	values := make(map[string][]float32, len(s.params))
	for _, p := range s.params {
		values[p.Name] = p.Data
	}
	flat, err := s.devs[0].flat(values, "LoRA weights") // every device has the same layout
	if err != nil {
		return nil, err
	}
	n := len(s.devs)
	var active []*deviceStepper
	g, gctx := errgroup.WithContext(ctx)
	for d, dev := range s.devs {
		mine := in.share(d, n)
		if len(mine.Batches) == 0 {
			continue
		}
		active = append(active, dev)
		g.Go(func() error {
			if err := dev.uploadState([]string{manifest.StateParams}, [][]float32{flat}); err != nil {
				return fmt.Errorf("device %d: %w", d, err)
			}
			if err := dev.run(gctx, mine.Batches, mine.Seeds, s.scalars(total), false); err != nil {
				return fmt.Errorf("device %d: %w", d, err)
			}
			return nil
		})
	}
	return active, g.Wait()
}

// scalars is the device graphs' step_scalars for an accumulating step over total tokens:
// only the backward's seed matters (no run applies AdamW).
func (s *multiDeviceStepper) scalars(total int) []float32 {
	v := make([]float32, manifest.StepScalars)
	if total > 0 {
		v[manifest.StepScalarSeed] = float32(float64(s.scaler.Scale()) / float64(total))
	}
	v[manifest.StepScalarInvScale], v[manifest.StepScalarDecay] = 1, 1
	v[manifest.StepScalarBC2Sqrt], v[manifest.StepScalarEps] = 1, 1
	v[manifest.StepScalarMaxNorm] = maxNormScalar(0) // the host clips
	return v
}

// reduce adds the active devices' gradient sums (into s.grads) and loss statistics.
func (s *multiDeviceStepper) reduce(active []*deviceStepper) (lossSum, tokens float64, err error) {
	var sum []float64
	for i, dev := range active {
		vs, err := dev.downloadState(manifest.StateGradSum, manifest.StateStats)
		if err != nil {
			return 0, 0, fmt.Errorf("device %d: %w", i, err)
		}
		g, st := vs[0], vs[1]
		if sum == nil {
			sum = make([]float64, len(g))
		}
		for j, v := range g {
			sum[j] += float64(v)
		}
		lossSum, tokens = lossSum+float64(st[0]), tokens+float64(st[1])
	}
	if len(active) == 0 {
		return 0, 0, nil
	}
	for _, l := range active[0].layout {
		v := s.grads[l.Name]
		if len(v) != int(l.Size) {
			v = make([]float32, l.Size)
			s.grads[l.Name] = v
		}
		for j := range v {
			v[j] = float32(sum[l.Offset+int64(j)])
		}
	}
	return lossSum, tokens, nil
}

// WarmupMicroBatches is the devices' largest (each runs its own bindings).
func (s *multiDeviceStepper) WarmupMicroBatches() int {
	n := 0
	for _, d := range s.devs {
		n = max(n, d.WarmupMicroBatches())
	}
	return n
}

// Close frees every device's buffers and copy sessions (the sessions are the engines').
func (s *multiDeviceStepper) Close() {
	for _, d := range s.devs {
		d.Close()
	}
	s.devs = nil
}
