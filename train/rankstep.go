package train

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train/optim"
	"google.golang.org/protobuf/proto"
)

// Collective is what one rank of a data-parallel run (one process per GPU, on one host or
// several) shares with the others: on the product path NCCL's all-reduce and the
// rendezvous' checksum comparison (dist.NCCL).
type Collective interface {
	Rank() int
	World() int
	// AllReduceSum replaces b's float32 values, in the session's device memory, by their
	// sum over the ranks, once the device's earlier work is done and before it is read again.
	AllReduceSum(ctx context.Context, b *ortrun.Buffer) error
	// Agree returns an error when the ranks' checksums at step differ.
	Agree(ctx context.Context, step int64, sum uint64) error
}

// rankStepper is one rank's part of data parallelism over processes: its device step graph
// accumulates the gradient sum of the step's micro-batches k ≡ rank (mod world) in device
// memory; the Collective then sums the gradient sums and the loss statistics in place across
// the ranks, and every rank applies the step on its device with the optimizer graph
// (passes.OptimizerGraph: the device step's overflow check, clipping and AdamW, which the
// single-device step runs inside its last micro-batch) to the same sums, so that the ranks'
// weights stay identical without leaving device memory; a checksum of the LoRA weights is
// compared every checkEvery steps. Micro-batch k keeps its dropout seed, so a step over W
// ranks is the one-device step over the same micro-batches, up to the order in which float32
// gradient sums are added.
type rankStepper struct {
	*deviceStepper
	coll       Collective
	checkEvery int
	opt        *ortrun.Session
	optScalars *ortrun.Buffer
	optBinds   [2]*ortrun.Binding // reads state set i, writes the other, as the step's bindings
}

// NewRankStepper returns the Stepper of one rank over its engine (opened with
// EngineOptions.DeviceStep), for batches of at most rows × seq, starting from init (every
// rank the same), checking the ranks' weights agree every checkEvery steps (0: never).
func NewRankStepper(e *Engine, init []optim.Param, cfg StepConfig, rows, seq int, coll Collective, checkEvery int) (Stepper, error) {
	switch {
	case coll == nil || coll.World() < 1 || coll.Rank() < 0 || coll.Rank() >= coll.World():
		return nil, errors.New("rank step: no collective, or a rank outside its world")
	case e.step == nil:
		return nil, errors.New("data parallelism over processes needs the device step: pass --step device or graph")
	case checkEvery < 0:
		return nil, fmt.Errorf("rank step: checksum every %d steps", checkEvery)
	}
	d, err := NewDeviceStepper(e, init, cfg, rows, seq)
	if err != nil {
		return nil, err
	}
	s := &rankStepper{deviceStepper: d.(*deviceStepper), coll: coll, checkEvery: checkEvery}
	if err := s.openOptimizer(e.Opts); err != nil {
		s.Close()
		return nil, fmt.Errorf("rank %d: the optimizer graph: %w", coll.Rank(), err)
	}
	return s, nil
}

// openOptimizer opens the optimizer graph on the step's device (uncaptured: one small run a
// step) and binds it to the step's two state sets.
func (s *rankStepper) openOptimizer(opts ortrun.Options) error {
	m, err := passes.OptimizerGraph(s.size)
	if err != nil {
		return err
	}
	b, err := proto.Marshal(m.P)
	if err != nil {
		return err
	}
	opts.CUDAGraph = false
	if s.opt, err = ortrun.NewSessionFromBytes(b, opts); err != nil {
		return err
	}
	if s.optScalars, err = s.opt.NewBuffer(ortrun.Float32, []int64{manifest.StepScalars}); err != nil {
		return err
	}
	for i := range s.optBinds {
		ins, outs := map[string]*ortrun.Buffer{passes.StepScalarsInput: s.optScalars}, map[string]*ortrun.Buffer{}
		for _, st := range passes.States {
			ins[passes.StateInput(st)], outs[passes.StateOutput(st)] = s.state[i][st], s.state[1-i][st]
		}
		if s.optBinds[i], err = s.opt.Bind(ins, outs, -1); err != nil {
			return err
		}
	}
	return nil
}

func (s *rankStepper) Step(ctx context.Context, in StepInput) (StepOutcome, error) {
	if err := in.check(); err != nil {
		return StepOutcome{}, err
	}
	total := in.tokens()
	out := StepOutcome{Scale: s.scaler.Scale()}
	sc := s.scalars(in.LR, total)
	mine := in.share(s.coll.Rank(), s.coll.World())
	if len(mine.Batches) > 0 {
		if err := s.run(ctx, mine.Batches, mine.Seeds, sc, false); err != nil {
			return StepOutcome{}, err
		}
	} else if err := s.uploadState([]string{manifest.StateGradSum, manifest.StateStats},
		[][]float32{make([]float32, s.size), make([]float32, manifest.StatsLen)}); err != nil {
		return StepOutcome{}, fmt.Errorf("rank %d: zeroing its gradient sum: %w", s.coll.Rank(), err) // an idle rank adds nothing
	}
	for _, name := range []string{manifest.StateGradSum, manifest.StateStats} {
		if err := s.coll.AllReduceSum(ctx, s.state[s.cur][name]); err != nil {
			return StepOutcome{}, fmt.Errorf("rank %d: all-reduce of %s: %w", s.coll.Rank(), name, err)
		}
	}
	sc[manifest.StepScalarKeep], sc[manifest.StepScalarApply] = 1, b2f(total > 0)
	if err := s.cp.Upload(s.optScalars, &ortrun.Tensor{DType: ortrun.Float32, Shape: []int64{manifest.StepScalars}, Data: sc}); err != nil {
		return StepOutcome{}, err
	}
	if err := s.optBinds[s.cur].Run(); err != nil {
		return StepOutcome{}, fmt.Errorf("rank %d: optimizer step: %w", s.coll.Rank(), err)
	}
	s.cur = 1 - s.cur
	out, err := s.outcome(out, total)
	if err != nil {
		return out, err
	}
	if s.checkEvery > 0 && in.Step%s.checkEvery == 0 {
		sum, err := s.checksum()
		if err == nil {
			err = s.coll.Agree(ctx, int64(in.Step), sum)
		}
		if err != nil {
			return out, fmt.Errorf("rank %d after step %d: %w", s.coll.Rank(), in.Step, err)
		}
	}
	return out, nil
}

// Close closes the optimizer session and the device step's buffers.
func (s *rankStepper) Close() {
	for i := range s.optBinds {
		if s.optBinds[i] != nil {
			s.optBinds[i].Close()
			s.optBinds[i] = nil
		}
	}
	if s.optScalars != nil {
		s.optScalars.Close()
		s.optScalars = nil
	}
	if s.opt != nil {
		s.opt.Close()
		s.opt = nil
	}
	s.deviceStepper.Close()
}

// checksum is FNV-1a over the LoRA weights' float32 bits (the flat parameter vector, read
// from the device).
func (s *rankStepper) checksum() (uint64, error) {
	v, err := s.download(manifest.StateParams)
	if err != nil {
		return 0, err
	}
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64(), nil
}
