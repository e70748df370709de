package train_test

import (
	"context"
	"encoding/json"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// fakeBackend is a train.Backend without ONNX Runtime: a hand-written manifest with two
// small "LoRA" tensors in a temp directory, a toy quadratic model whose loss depends on
// the parameters, the batches and the dropout seeds (so a resume that replayed the wrong
// data or seeds would change the losses), and fault injection by step.
type fakeBackend struct {
	dir string
	man *manifest.Manifest
	// fault returns the value written into a gradient at a loop step (NaN, ±Inf), or 0.
	fault func(step int) float64
	// after runs when a Step finishes (a test cancels its ctx there, as SIGINT would).
	after func(step int)
	// evals counts Eval calls.
	evals int
}

// fastTempDir is a temp directory in memory (/dev/shm) where there is one: the loop
// fsyncs every checkpoint file, which costs milliseconds each on a disk and nothing on
// tmpfs, and durability is not what the fake-step tests check. Elsewhere, t.TempDir().
func fastTempDir(t testing.TB) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "ortq-train-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// newFakeBackend writes manifest.json and the LoRA init tensors into a temp directory.
func newFakeBackend(t testing.TB) *fakeBackend {
	t.Helper()
	dir := fastTempDir(t)
	man := &manifest.Manifest{LoRAInit: manifest.LoRAInitFile, Params: []manifest.LoRAParam{
		{Name: "base_model.model.layers.0.q_proj.lora_A.weight", Module: "layers.0.q_proj", Kind: "A", Shape: []int64{2, 3}},
		{Name: "base_model.model.layers.0.q_proj.lora_B.weight", Module: "layers.0.q_proj", Kind: "B", Shape: []int64{3, 2}},
	}}
	var ts []safetensors.Tensor
	for j, p := range man.Params {
		v := make([]float32, p.Shape[0]*p.Shape[1])
		for i := range v {
			v[i] = float32(j+1) * 0.1 * float32(i%3-1)
		}
		ts = append(ts, safetensors.F32Tensor(p.Name, p.Shape, v))
	}
	if err := safetensors.Write(filepath.Join(dir, man.LoRAInit), ts, nil); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, manifest.ManifestFile), js, 0o644); err != nil {
		t.Fatal(err)
	}
	return &fakeBackend{dir: dir, man: man}
}

func (b *fakeBackend) Artifacts() (string, *manifest.Manifest) { return b.dir, b.man }

func (b *fakeBackend) RunNotes() []string { return []string{"fake step: a quadratic toy model in Go"} }

func (b *fakeBackend) Eval(batches []data.Batch, params map[string][]float32) (float64, int64, error) {
	b.evals++
	var sum float64
	var n int64
	for _, bt := range batches {
		s, _ := quadLoss(bt, 0, params, nil)
		sum += s
		n += int64(bt.Tokens)
	}
	return sum, n, nil
}

func (b *fakeBackend) NewStepper(init []optim.Param, sc train.StepConfig, rows, seq int) (train.Stepper, error) {
	opt, err := optim.NewAdamW(init, sc.AdamW)
	if err != nil {
		return nil, err
	}
	scaler, err := optim.NewGradScaler(sc.Scaler)
	if err != nil {
		return nil, err
	}
	return &fakeStepper{b: b, params: init, opt: opt, scaler: scaler}, nil
}

// quadLoss is the toy model: each micro-batch pulls every parameter θ_i towards a target
// c_i drawn from the batch's tokens and the dropout seed; the loss sum is
// Σ_tokens ½ Σ_i (θ_i − c_i)². It adds d(loss sum)/dθ into grads (when non-nil).
func quadLoss(b data.Batch, seed uint64, params map[string][]float32, grads map[string][]float64) (lossSum float64, tokens int) {
	var h int64
	for i, id := range b.InputIDs {
		if b.AttentionMask[i] != 0 {
			h = (h*31 + id) % 1009
		}
	}
	c := float64(h)/1009 - 0.5 + float64(seed%7)/100
	n := float64(b.Tokens)
	// In name order: the sum must not depend on map iteration, or a resume could not be
	// bit-exact.
	for _, name := range slices.Sorted(maps.Keys(params)) {
		for i, x := range params[name] {
			d := float64(x) - c*float64(i%4+1)/4
			lossSum += n * 0.5 * d * d
			if grads != nil {
				grads[name][i] += n * d
			}
		}
	}
	return lossSum, b.Tokens
}

// fakeStepper is a train.Stepper over quadLoss with the package's AdamW and GradScaler,
// following the host stepper's order: scaled gradients, unscale and overflow check, then
// AdamW or a skip.
type fakeStepper struct {
	b      *fakeBackend
	params []optim.Param
	opt    *optim.AdamW
	scaler *optim.GradScaler
}

func (s *fakeStepper) values() map[string][]float32 {
	m := map[string][]float32{}
	for _, p := range s.params {
		m[p.Name] = p.Data
	}
	return m
}

func (s *fakeStepper) Step(ctx context.Context, in train.StepInput) (train.StepOutcome, error) {
	acc := map[string][]float64{}
	for _, p := range s.params {
		acc[p.Name] = make([]float64, len(p.Data))
	}
	var lossSum float64
	tokens := 0
	for k, b := range in.Batches {
		if err := ctx.Err(); err != nil {
			return train.StepOutcome{}, err
		}
		l, n := quadLoss(b, in.Seeds[k], s.values(), acc)
		lossSum, tokens = lossSum+l, tokens+n
	}
	out := train.StepOutcome{Scale: s.scaler.Scale(), Loss: math.NaN()}
	if s.b.after != nil {
		defer s.b.after(in.Step)
	}
	if tokens == 0 {
		out.NoTokens = true
		return out, nil
	}
	out.Loss = lossSum / float64(tokens)
	grads := map[string][]float32{}
	for name, g := range acc {
		v := make([]float32, len(g))
		for i := range g {
			v[i] = float32(g[i] / float64(tokens) * float64(out.Scale))
		}
		grads[name] = v
	}
	if s.b.fault != nil {
		if f := s.b.fault(in.Step); f != 0 {
			grads[s.params[0].Name][0] = float32(f)
		}
	}
	inf := s.scaler.UnscaleMap(grads)
	if inf && !s.scaler.Enabled() {
		out.NonFinite = true
		return out, nil
	}
	if inf {
		out.Skipped = true
	} else if err := s.opt.Step(grads, in.LR); err != nil {
		return out, err
	}
	s.scaler.Update(inf)
	out.ConsecutiveSkips = s.scaler.ConsecutiveSkips()
	return out, nil
}

func (s *fakeStepper) Params() (map[string][]float32, error) {
	m := map[string][]float32{}
	for _, p := range s.params {
		m[p.Name] = append([]float32(nil), p.Data...)
	}
	return m, nil
}

func (s *fakeStepper) State() (train.StepState, error) {
	st := train.StepState{Adam: s.opt.State(), Scaler: s.scaler.State()}
	for _, p := range s.params {
		st.Params = append(st.Params, optim.Param{Name: p.Name, Data: append([]float32(nil), p.Data...)})
	}
	return st, nil
}

func (s *fakeStepper) Restore(st train.StepState) error {
	by := map[string][]float32{}
	for _, p := range st.Params {
		by[p.Name] = p.Data
	}
	for _, p := range s.params {
		copy(p.Data, by[p.Name])
	}
	if err := s.opt.LoadState(st.Adam); err != nil {
		return err
	}
	return s.scaler.LoadState(st.Scaler)
}

func (s *fakeStepper) Scale() float32 { return s.scaler.Scale() }

func (s *fakeStepper) Close() {}
