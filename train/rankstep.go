package train

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train/optim"
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
// memory, as one device of the multi-device stepper does; the Collective then sums the
// gradient sums and the loss statistics in place across the ranks, and every rank makes
// the same overflow decision and runs the same host AdamW on the same sums (the
// multi-device stepper's update), so that their weights stay identical: a checksum of the
// LoRA weights is compared every checkEvery steps. Micro-batch k keeps its dropout seed,
// so a step over W ranks is the one-device step over the same micro-batches, up to the
// order in which float32 gradient sums are added.
type rankStepper struct {
	*multiDeviceStepper
	coll       Collective
	checkEvery int
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
	m, err := NewMultiDeviceStepper([]*Engine{e}, init, cfg, rows, seq)
	if err != nil {
		return nil, err
	}
	return &rankStepper{multiDeviceStepper: m.(*multiDeviceStepper), coll: coll, checkEvery: checkEvery}, nil
}

func (s *rankStepper) Step(ctx context.Context, in StepInput) (StepOutcome, error) {
	if err := in.check(); err != nil {
		return StepOutcome{}, err
	}
	total := in.tokens()
	out := StepOutcome{Scale: s.scaler.Scale()}
	dev := s.devs[0]
	mine := in.share(s.coll.Rank(), s.coll.World())
	if len(mine.Batches) > 0 {
		if _, err := s.accumulate(ctx, mine, total); err != nil {
			return StepOutcome{}, err
		}
	} else if err := dev.uploadState([]string{manifest.StateGradSum, manifest.StateStats},
		[][]float32{make([]float32, dev.size), make([]float32, manifest.StatsLen)}); err != nil {
		return StepOutcome{}, fmt.Errorf("rank %d: zeroing its gradient sum: %w", s.coll.Rank(), err) // an idle rank adds nothing
	}
	for _, name := range []string{manifest.StateGradSum, manifest.StateStats} {
		if err := s.coll.AllReduceSum(ctx, dev.state[dev.cur][name]); err != nil {
			return StepOutcome{}, fmt.Errorf("rank %d: all-reduce of %s: %w", s.coll.Rank(), name, err)
		}
	}
	lossSum, tokens, err := s.download(dev)
	if err != nil {
		return StepOutcome{}, err
	}
	if out, err = s.update(in, out, lossSum, tokens, total); err != nil {
		return out, err
	}
	if s.checkEvery > 0 && in.Step%s.checkEvery == 0 {
		if err := s.coll.Agree(ctx, int64(in.Step), s.checksum()); err != nil {
			return out, fmt.Errorf("rank %d after step %d: %w", s.coll.Rank(), in.Step, err)
		}
	}
	return out, nil
}

// download copies the all-reduced gradient sum into s.grads and returns the loss
// statistics: the multi-device stepper's reduce over one device, without its float64 pass
// (a float32 value round-trips through float64 unchanged) and its 8-bytes-a-value buffer.
func (s *rankStepper) download(dev *deviceStepper) (lossSum, tokens float64, err error) {
	vs, err := dev.downloadState(manifest.StateGradSum, manifest.StateStats)
	if err != nil {
		return 0, 0, fmt.Errorf("rank %d: %w", s.coll.Rank(), err)
	}
	g, st := vs[0], vs[1]
	for _, l := range dev.layout {
		copy(s.grad(l), g[l.Offset:l.Offset+l.Size])
	}
	return float64(st[0]), float64(st[1]), nil
}

// checksum is FNV-1a over the LoRA weights' float32 bits, in parameter order.
func (s *rankStepper) checksum() uint64 {
	h := fnv.New64a()
	var b []byte
	for _, p := range s.params {
		b = b[:0]
		for _, v := range p.Data {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		h.Write(b)
	}
	return h.Sum64()
}
