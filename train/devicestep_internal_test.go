package train

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare/preparetest"
	"github.com/ortq/ortq/train/optim"
)

// TestDeviceStepCopySessions: where the Copier copies through sessions (the CPU here; CUDA
// with ORTQ_DIRECT_COPY=0 or when CopyTensors fails), a device step's transfers (micro-batch
// uploads, the stats after a step, weights for evaluation, checkpoint state both ways) go
// through two copy sessions, each of which is an execution provider with memory of its own
// on a GPU.
func TestDeviceStepCopySessions(t *testing.T) {
	art := preparetest.Default(t, nil)
	e, err := OpenEngineWith(art, ortrun.Options{IntraOpThreads: 1}, EngineOptions{DeviceStep: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	init, err := LoadParams(filepath.Join(art, e.Man.LoRAInit), e.Man)
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.NewStepper(init, StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.GradScalerConfig{Disabled: true}}, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ids := []int64{1, 2, 3, 4, 5, 6, 7, 8}
	b := data.Batch{Rows: 1, SeqLen: 8, InputIDs: ids, AttentionMask: []int64{1, 1, 1, 1, 1, 1, 1, 1}, Labels: ids, Tokens: 7}
	if _, err := st.Step(context.Background(), StepInput{Step: 1, Batches: []data.Batch{b}, Seeds: []uint64{1}, LR: 1e-3}); err != nil {
		t.Fatal(err)
	}
	state, err := st.State()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Params(); err != nil {
		t.Fatal(err)
	}
	if err := st.Restore(state); err != nil {
		t.Fatal(err)
	}
	if n := st.(*deviceStepper).cp.Sessions(); n != 2 {
		t.Errorf("%d copy sessions, want 2 (micro-batch feed, state vectors)", n)
	}
}

// TestMaxBatchSeq: the device step's batch length is data.MakeBatch's for the longest
// example, PadMultiple 0 meaning data.DefaultPadMultiple (not "no rounding").
func TestMaxBatchSeq(t *testing.T) {
	ex := []data.Example{make(data.Example, 5), make(data.Example, 17)}
	for _, c := range []struct{ mult, want int }{{0, 2 * data.DefaultPadMultiple}, {1, 17}, {8, 24}} {
		o := data.BatchOptions{BatchSize: 2, PadMultiple: c.mult}
		b, err := data.MakeBatch(ex, []int{0, 1}, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := maxBatchSeq(ex, o); got != c.want || got != b.SeqLen {
			t.Errorf("pad multiple %d: maxBatchSeq %d, MakeBatch %d, want %d", c.mult, got, b.SeqLen, c.want)
		}
	}
}
