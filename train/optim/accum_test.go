package optim

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// toyModel is a per-token loss l_t(w) = ½·Σ_i (w_i − x_{t,i})², so the loss
// sum of a micro-batch and its gradient Σ_t (w − x_t) are easy to compute;
// that is all accumulation needs to be checked against one big batch.
func toyBatch(w []float32, tokens [][]float32, scale float32) (lossSum float64, grad []float32) {
	g64 := make([]float64, len(w))
	for _, x := range tokens {
		for i := range w {
			d := float64(w[i]) - float64(x[i])
			lossSum += 0.5 * d * d
			g64[i] += d
		}
	}
	grad = make([]float32, len(w))
	for i := range g64 {
		grad[i] = float32(g64[i] * float64(scale))
	}
	return lossSum, grad
}

func TestGradAccumulatorEqualsOneBatch(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const dim = 16
	w := make([]float32, dim)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	// Micro-batches of very different token counts: a plain average of
	// per-micro-batch means would be wrong here.
	var micro [][][]float32
	var all [][]float32
	for _, n := range []int{1, 17, 4, 60} {
		var mb [][]float32
		for j := 0; j < n; j++ {
			x := make([]float32, dim)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			mb = append(mb, x)
			all = append(all, x)
		}
		micro = append(micro, mb)
	}
	for _, scale := range []float32{1, 65536} {
		acc := NewGradAccumulator([]Param{{Name: "w", Data: w}})
		for _, mb := range micro {
			ls, g := toyBatch(w, mb, scale)
			if err := acc.Add(map[string][]float32{"w": g}, ls*float64(scale), len(mb)); err != nil {
				t.Fatal(err)
			}
		}
		out := map[string][]float32{}
		mean, err := acc.Finish(out)
		if err != nil {
			t.Fatal(err)
		}
		ls, g := toyBatch(w, all, scale)
		wantMean := ls * float64(scale) / float64(len(all))
		if math.Abs(mean-wantMean) > 1e-12*math.Abs(wantMean) {
			t.Errorf("scale %v: mean loss %v, one batch %v", scale, mean, wantMean)
		}
		maxRef, maxDiff := 0.0, 0.0
		for i := range g {
			want := float64(g[i]) / float64(len(all))
			maxRef = math.Max(maxRef, math.Abs(want))
			maxDiff = math.Max(maxDiff, math.Abs(float64(out["w"][i])-want))
		}
		if maxDiff > 1e-6*maxRef {
			t.Errorf("scale %v: accumulated gradient differs from one batch by %g (max |g| %g)", scale, maxDiff, maxRef)
		}
		if acc.Tokens() != int64(len(all)) || acc.MicroBatches() != 4 {
			t.Errorf("tokens %d micro %d", acc.Tokens(), acc.MicroBatches())
		}
		acc.Reset()
		if _, err := acc.Finish(out); !errors.Is(err, ErrNoTokens) {
			t.Errorf("Finish after Reset: %v", err)
		}
	}
}

func TestGradAccumulatorErrors(t *testing.T) {
	acc := NewGradAccumulator([]Param{{Name: "a", Data: make([]float32, 2)}})
	for _, tc := range []struct {
		g      map[string][]float32
		tokens int
	}{
		{map[string][]float32{"a": {1}}, 1},
		{map[string][]float32{"b": {1, 2}}, 1},
		{map[string][]float32{"a": {1, 2}, "b": {1}}, 1},
		{map[string][]float32{"a": {1, 2}}, -1},
	} {
		if err := acc.Add(tc.g, 0, tc.tokens); err == nil {
			t.Errorf("Add(%v, %d) accepted", tc.g, tc.tokens)
		}
	}
	if acc.MicroBatches() != 0 {
		t.Error("failed Add counted")
	}
}
