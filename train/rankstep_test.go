package train_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// memWorld is a test double of NCCL for in-process ranks on the CPU, where a session's
// "device" memory is host memory: each round waits for every rank and sums their buffers
// in float32, in rank order. Tests only: the product path is NCCL (dist.NCCL).
type memWorld struct {
	n       int
	mu      sync.Mutex
	bufs    [][]float32
	sums    []uint64
	arrived int
	done    chan struct{}
	diverge int // a rank whose checksum is altered (−1: none)
}

type memRank struct {
	w    *memWorld
	rank int
}

func (r memRank) Rank() int  { return r.rank }
func (r memRank) World() int { return r.w.n }

// round registers rank's contribution; the last to arrive runs last; all return after it.
func (w *memWorld) round(rank int, add func(), last func()) {
	w.mu.Lock()
	if w.arrived == 0 {
		w.bufs, w.sums, w.done = make([][]float32, w.n), make([]uint64, w.n), make(chan struct{})
	}
	add()
	w.arrived++
	done := w.done
	if w.arrived == w.n {
		last()
		w.arrived = 0
		close(done)
	}
	w.mu.Unlock()
	<-done
}

func (r memRank) AllReduceSum(_ context.Context, b *ortrun.Buffer) error {
	p, n, err := b.DataPointer()
	if err != nil {
		return err
	}
	v := unsafe.Slice((*float32)(p), n/4) // a CPU session's buffer is host memory
	w := r.w
	w.round(r.rank, func() { w.bufs[r.rank] = v }, func() {
		sum := slices.Clone(w.bufs[0])
		for _, o := range w.bufs[1:] {
			for i := range sum {
				sum[i] += o[i]
			}
		}
		for _, o := range w.bufs {
			copy(o, sum)
		}
	})
	return nil
}

func (r memRank) Agree(_ context.Context, step int64, sum uint64) error {
	w := r.w
	if r.rank == w.diverge {
		sum++
	}
	var bad error
	w.round(r.rank, func() { w.sums[r.rank] = sum }, func() {})
	for k, s := range w.sums {
		if s != w.sums[0] && bad == nil {
			bad = fmt.Errorf("the ranks' LoRA weights differ at step %d: rank %d", step, k)
		}
	}
	return bad
}

// runRanks runs the steps on `world` in-process ranks, each a CPU engine of the device step
// with its own rankStepper, stepping together; it returns rank 0's run and fails when the
// ranks' weights differ. With resumeAt > 0 every rank is replaced midway by one restored
// from its state.
func runRanks(t *testing.T, art string, world int, cfg train.StepConfig, steps [][]data.Batch, rows, seq, resumeAt int, diverge int) (stepRun, error) {
	t.Helper()
	w := &memWorld{n: world, diverge: diverge}
	runs := make([]stepRun, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[r], errs[r] = runRank(art, memRank{w, r}, cfg, steps, rows, seq, resumeAt)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return stepRun{}, err
	}
	for r := 1; r < world; r++ {
		for name, p := range runs[0].params {
			if !slices.Equal(p, runs[r].params[name]) {
				t.Fatalf("rank %d's %s differs from rank 0's", r, name)
			}
		}
	}
	return runs[0], nil
}

func runRank(art string, coll memRank, cfg train.StepConfig, steps [][]data.Batch, rows, seq, resumeAt int) (stepRun, error) {
	var r stepRun
	var e *train.Engine
	open := func(st *train.StepState) (train.Stepper, error) {
		var err error
		if e, err = train.OpenEngineWith(art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, train.EngineOptions{DeviceStep: true, LazyEval: true}); err != nil {
			return nil, err
		}
		init, err := train.LoadParams(filepath.Join(art, e.Man.LoRAInit), e.Man)
		if err != nil {
			return nil, err
		}
		s, err := train.NewRankStepper(e, init, cfg, rows, seq, coll, 1)
		if err == nil && st != nil {
			err = s.Restore(*st)
		}
		return s, err
	}
	s, err := open(nil)
	if err != nil {
		return r, err
	}
	defer func() { s.Close(); e.Close() }()
	for i, bs := range steps {
		if i == resumeAt && resumeAt > 0 {
			st, err := s.State()
			if err != nil {
				return r, err
			}
			s.Close()
			e.Close()
			if s, err = open(&st); err != nil {
				return r, err
			}
		}
		in := train.StepInput{Step: i + 1, Batches: bs, LR: 1e-2 * float64(i+1) / float64(len(steps))} // as driveSteps
		for k := range bs {
			in.Seeds = append(in.Seeds, uint64(100*i+k))
		}
		out, err := s.Step(context.Background(), in)
		if err != nil {
			return r, fmt.Errorf("rank %d step %d: %w", coll.rank, i+1, err)
		}
		r.losses, r.skipped, r.norms = append(r.losses, out.Loss), append(r.skipped, out.Skipped), append(r.norms, out.GradNorm)
	}
	r.params, err = s.Params()
	return r, err
}

// TestRankStepperMatchesOneDevice: two (and three) in-process ranks, each accumulating its
// share of the micro-batches on its own device step, summing through the collective and
// applying the step with the optimizer graph, give one device step's losses (through all the
// micro-batches, AdamW in its graph) within 1e-6 relative and its LoRA weights within 1e-4
// (float32 gradient sums added in another order, which AdamW's first steps magnify: each of
// the two is within matchesHost's 2e-5 of the host stepper, measured 2.1e-5 apart with 2
// ranks and one dropout mask per target, 5.4e-5 with the masks shared per input, bit for
// bit with 3 ranks of one micro-batch each), and the host stepper's within
// matchesHost's bounds; dropout and clipping on, one rank idle in the
// steps of fewer micro-batches than ranks. Every rank's weights are identical; a run whose
// ranks are all restored midway equals the uninterrupted one bit for bit.
func TestRankStepperMatchesOneDevice(t *testing.T) {
	const rows, seq = 2, 24
	cfg := train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.DefaultGradScalerConfig(), MaxGradNorm: clipAt}
	cfg.Scaler.Disabled = true
	art := stepFixture(t, 0.1, false)
	for _, c := range []struct {
		world, k int
	}{{2, 4}, {3, 2}} {
		t.Run(fmt.Sprintf("%d ranks, %d micro-batches", c.world, c.k), func(t *testing.T) {
			steps := stepBatches(4, c.k, rows, seq, false)
			ranks, err := runRanks(t, art, c.world, cfg, steps, rows, seq, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			dev := runStepper(t, art, true, cfg, steps, rows, seq, 0)
			dLoss, dParam := compareRuns(t, "ranks vs one device step", dev, ranks, 1e-4)
			if dLoss > 1e-6 {
				t.Errorf("losses differ from one device step's by %.3g relative, want ≤ 1e-6", dLoss)
			}
			t.Logf("%d ranks vs one device step: losses within %.3g, weights within %.3g", c.world, dLoss, dParam)
			matchesHost(t, fmt.Sprintf("%d ranks", c.world), runMultiDevice(t, art, 1, cfg, steps, rows, seq, 0), ranks)
			if c.world == 2 {
				resumed, err := runRanks(t, art, c.world, cfg, steps, rows, seq, 2, -1)
				if err != nil {
					t.Fatal(err)
				}
				sameRunSteps(t, ranks, resumed)
			}
		})
	}
}

// TestRankStepperDivergence: a rank whose weights differ stops every rank at the checksum.
func TestRankStepperDivergence(t *testing.T) {
	const rows, seq = 2, 24
	cfg := train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.DefaultGradScalerConfig()}
	art := stepFixture(t, 0, false)
	_, err := runRanks(t, art, 2, cfg, stepBatches(1, 2, rows, seq, false), rows, seq, 0, 1)
	if err == nil || !strings.Contains(err.Error(), "LoRA weights differ at step 1: rank 1") {
		t.Fatalf("got %v; want the checksum mismatch naming rank 1", err)
	}
}
