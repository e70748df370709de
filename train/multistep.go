package train

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"sort"

	"golang.org/x/sync/errgroup"

	"github.com/ortq/ortq/train/optim"
)

// multiStepper is data parallelism over the devices of one host: one Engine (training
// session) per device, each optimizer step's micro-batches spread over them and run
// concurrently, the gradients reduced on the host and one AdamW update that every engine
// uses next step.
//
// The reduction is the host stepper's accumulation, not an average of per-device means:
// every micro-batch's d(loss_sum·scale)/dθ is added in float64 in micro-batch order,
// whichever device ran it, and divided by the step's total label tokens. With the dropout
// seed of micro-batch k being in.Seeds[k] on any device, a step on N devices adds the same
// float32 gradients in the same order as one device does: the result does not depend on the
// device count. LoRA gradients are small (≈9–11 MB fp32 for q/v r=8 on the 3B shape), so
// bringing them to Go memory costs little beside a step.
//
// While the devices wait for the update, the host's work is split by tensor over shards
// that run in parallel: each element's sum, unscale and AdamW update depend on that element
// alone (and the step's scalars), so the shards give the single AdamW's result bit for bit,
// in a fraction of its time (one AdamW over the 3B shape's 2.3 M LoRA values takes tens of
// milliseconds on one core).
type multiStepper struct {
	engines []*Engine
	params  []optim.Param
	values  map[string][]float32
	shards  []*updateShard
	scaler  *optim.GradScaler
	// grads holds every tensor's reduced gradient, allocated once: the shards write their
	// own entries' elements, never the map.
	grads map[string][]float32
	hook  func(int, map[string][]float32)
	// maxNorm is StepConfig.MaxGradNorm.
	maxNorm float64
}

// updateShard is the host-side work of a subset of the LoRA tensors.
type updateShard struct {
	names []string
	acc   *optim.GradAccumulator
	opt   *optim.AdamW
	grads map[string][]float32 // its entries of multiStepper.grads
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
// With one engine it computes what the host stepper does.
func NewMultiStepper(engines []*Engine, init []optim.Param, cfg StepConfig) (Stepper, error) {
	if len(engines) == 0 {
		return nil, errors.New("multi-device step: no engine")
	}
	for i, e := range engines {
		if e == nil || e.train == nil {
			return nil, fmt.Errorf("multi-device step: engine %d has no training session (the device-resident step cannot be shared)", i)
		}
		if e.Dir != engines[0].Dir || e.trainGraph.File != engines[0].trainGraph.File {
			return nil, fmt.Errorf("multi-device step: engine %d runs %s of %q, engine 0 %s of %q", i, e.trainGraph.File, e.Dir, engines[0].trainGraph.File,
				engines[0].Dir)
		}
	}
	if len(init) == 0 {
		return nil, errors.New("multi-device step: no LoRA parameters")
	}
	scaler, err := optim.NewGradScaler(cfg.Scaler)
	if err != nil {
		return nil, err
	}
	if !(cfg.MaxGradNorm >= 0) || math.IsInf(cfg.MaxGradNorm, 0) {
		return nil, fmt.Errorf("invalid max gradient norm %v: must be ≥ 0 and finite", cfg.MaxGradNorm)
	}
	s := &multiStepper{engines: engines, params: init, values: map[string][]float32{}, scaler: scaler,
		grads: map[string][]float32{}, hook: cfg.GradHook, maxNorm: cfg.MaxGradNorm}
	for _, p := range init {
		s.values[p.Name] = p.Data
		s.grads[p.Name] = make([]float32, len(p.Data))
	}
	for _, part := range partitionParams(init, runtime.GOMAXPROCS(0)) {
		opt, err := optim.NewAdamW(part, cfg.AdamW)
		if err != nil {
			return nil, err
		}
		sh := &updateShard{acc: optim.NewGradAccumulator(part), opt: opt, grads: map[string][]float32{}}
		for _, p := range part {
			sh.names = append(sh.names, p.Name)
			sh.grads[p.Name] = s.grads[p.Name]
		}
		s.shards = append(s.shards, sh)
	}
	return s, nil
}

// partitionParams splits params into at most n non-empty groups of about equal size
// (largest first, each to the lightest group).
func partitionParams(params []optim.Param, n int) [][]optim.Param {
	n = max(1, min(n, len(params)))
	order := make([]int, len(params))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return len(params[order[a]].Data) > len(params[order[b]].Data) })
	parts := make([][]optim.Param, n)
	load := make([]int, n)
	for _, i := range order {
		j := 0
		for k := range load {
			if load[k] < load[j] || len(parts[j]) > 0 && len(parts[k]) == 0 {
				j = k
			}
		}
		parts[j] = append(parts[j], params[i])
		load[j] += len(params[i].Data)
	}
	return parts
}

// eachShard runs f on every shard at once and returns the first error.
func (s *multiStepper) eachShard(f func(i int, sh *updateShard) error) error {
	if len(s.shards) == 1 {
		return f(0, s.shards[0])
	}
	var g errgroup.Group
	for i, sh := range s.shards {
		g.Go(func() error { return f(i, sh) })
	}
	return g.Wait()
}

func (s *multiStepper) Step(ctx context.Context, in StepInput) (StepOutcome, error) {
	if err := in.check(); err != nil {
		return StepOutcome{}, err
	}
	for _, sh := range s.shards {
		sh.acc.Reset()
	}
	if err := s.accumulate(ctx, in); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return StepOutcome{}, cerr
		}
		return StepOutcome{}, err
	}
	return s.update(in)
}

// accumulate runs the micro-batches, one goroutine per device, and adds their gradients in
// micro-batch order as they arrive. Devices advance round-robin, so only about one result
// per device waits for its predecessors.
func (s *multiStepper) accumulate(ctx context.Context, in StepInput) error {
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
				aerr = s.add(p)
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

// add accumulates one micro-batch, each shard its own tensors.
func (s *multiStepper) add(m microResult) error {
	if len(m.r.Grads) != len(s.params) {
		return fmt.Errorf("grad accumulation: got %d gradients, expected %d", len(m.r.Grads), len(s.params))
	}
	return s.eachShard(func(_ int, sh *updateShard) error {
		sub := make(map[string][]float32, len(sh.names))
		for _, name := range sh.names {
			g, ok := m.r.Grads[name]
			if !ok {
				return fmt.Errorf("grad accumulation: no gradient for %q", name)
			}
			sub[name] = g
		}
		return sh.acc.AddScaled(sub, float64(m.div), m.r.LossSum, m.r.Tokens)
	})
}

// update is the host stepper's end of a step on the reduced gradients: the mean, the
// unscale, one overflow decision for every device, and one AdamW step.
func (s *multiStepper) update(in StepInput) (StepOutcome, error) {
	out := StepOutcome{Scale: s.scaler.Scale()}
	losses := make([]float64, len(s.shards))
	infs := make([]bool, len(s.shards))
	err := s.eachShard(func(i int, sh *updateShard) error {
		var err error
		if losses[i], err = sh.acc.Finish(sh.grads); err != nil {
			return err
		}
		for _, g := range sh.grads {
			infs[i] = s.scaler.Unscale(g) || infs[i]
		}
		return nil
	})
	out.Loss = losses[0] // every shard added every micro-batch's loss and tokens
	if errors.Is(err, optim.ErrNoTokens) {
		out.NoTokens, out.GradNorm = true, math.NaN()
		return out, nil
	}
	if err != nil {
		return out, err
	}
	inf := slices.Contains(infs, true)
	if s.hook != nil {
		s.hook(in.Step, s.grads)
		inf = inf || !allFinite(s.grads)
		for _, sh := range s.shards { // the hook may have replaced slices
			for _, name := range sh.names {
				sh.grads[name] = s.grads[name]
			}
		}
	}
	out.GradNorm = s.clip()
	err = finishStep(s.scaler, &out, inf, func() error {
		return s.eachShard(func(_ int, sh *updateShard) error { return sh.opt.Step(sh.grads, in.LR) })
	})
	return out, err
}

// clip is clipGrads over the shards: each shard takes its tensors' norms and then scales
// them, the total norm adding the per-tensor norms in s.params' order as the host stepper
// does, so the result is the same bit for bit.
func (s *multiStepper) clip() float64 {
	pos := make(map[string]int, len(s.params))
	for i, p := range s.params {
		pos[p.Name] = i
	}
	norms := make([]float32, len(s.params))
	_ = s.eachShard(func(_ int, sh *updateShard) error {
		for _, name := range sh.names {
			norms[pos[name]] = optim.TensorNorm(sh.grads[name])
		}
		return nil
	})
	total := optim.TotalNorm(norms)
	_ = s.eachShard(func(_ int, sh *updateShard) error {
		optim.ApplyClip(sh.grads, sh.names, total, s.maxNorm)
		return nil
	})
	return float64(total)
}

func (s *multiStepper) Params() (map[string][]float32, error) {
	out := make(map[string][]float32, len(s.params))
	for _, p := range s.params {
		out[p.Name] = append([]float32(nil), p.Data...)
	}
	return out, nil
}

// State is the host stepper's: the shards' moments as one AdamW state.
func (s *multiStepper) State() (StepState, error) {
	st := StepState{Scaler: s.scaler.State(),
		Adam: optim.AdamWState{Step: s.shards[0].opt.StepCount(), ExpAvg: map[string][]float32{}, ExpAvgSq: map[string][]float32{}}}
	for _, p := range s.params {
		st.Params = append(st.Params, optim.Param{Name: p.Name, Data: append([]float32(nil), p.Data...), NoDecay: p.NoDecay})
	}
	for _, sh := range s.shards {
		a := sh.opt.State()
		maps.Copy(st.Adam.ExpAvg, a.ExpAvg)
		maps.Copy(st.Adam.ExpAvgSq, a.ExpAvgSq)
	}
	return st, nil
}

// Restore loads a host stepper's (or this stepper's) state, each shard its tensors.
func (s *multiStepper) Restore(st StepState) error {
	if len(st.Adam.ExpAvg) != len(s.params) || len(st.Adam.ExpAvgSq) != len(s.params) {
		return fmt.Errorf("AdamW state has %d/%d moment tensors, the optimizer has %d parameters", len(st.Adam.ExpAvg), len(st.Adam.ExpAvgSq), len(s.params))
	}
	if err := copyParams(s.params, st.Params); err != nil {
		return err
	}
	for _, sh := range s.shards {
		a := optim.AdamWState{Step: st.Adam.Step, ExpAvg: map[string][]float32{}, ExpAvgSq: map[string][]float32{}}
		for _, name := range sh.names {
			a.ExpAvg[name], a.ExpAvgSq[name] = st.Adam.ExpAvg[name], st.Adam.ExpAvgSq[name]
		}
		if err := sh.opt.LoadState(a); err != nil {
			return err
		}
	}
	return s.scaler.LoadState(st.Scaler)
}

func (s *multiStepper) Scale() float32 { return s.scaler.Scale() }

// Close leaves the engines open: they are the caller's.
func (s *multiStepper) Close() {}
