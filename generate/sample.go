package generate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Sampler picks the next token from a row of logits: greedy (argmax) when Temperature is
// 0, else a draw from softmax(logits/Temperature) restricted to the TopK most likely tokens
// (0: all) and to the smallest set whose probability reaches TopP (1: all), as
// transformers' TopK/TopP logits warpers do, in that order.
type Sampler struct {
	Temperature float64
	TopK        int
	TopP        float64
	rng         *rand.Rand
}

// NewSampler checks the options and seeds the random source.
func NewSampler(temperature float64, topK int, topP float64, seed uint64) (*Sampler, error) {
	switch {
	case temperature < 0 || math.IsNaN(temperature) || math.IsInf(temperature, 0):
		return nil, fmt.Errorf("--temperature %g: use 0 (greedy) or a positive number", temperature)
	case topK < 0:
		return nil, fmt.Errorf("--top-k %d: use 0 (off) or a positive number", topK)
	case !(topP > 0 && topP <= 1):
		return nil, fmt.Errorf("--top-p %g: use a number in (0, 1]", topP)
	}
	return &Sampler{Temperature: temperature, TopK: topK, TopP: topP, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}, nil
}

// Next returns the chosen token id.
func (s *Sampler) Next(logits []float32) int {
	if s.Temperature == 0 {
		return argmax(logits)
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	// Stable order: equal logits keep id order, so a seed gives one sequence.
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	if s.TopK > 0 && s.TopK < len(idx) {
		idx = idx[:s.TopK]
	}
	p := make([]float64, len(idx))
	top, sum := float64(logits[idx[0]]), 0.0
	for i, id := range idx {
		p[i] = math.Exp((float64(logits[id]) - top) / s.Temperature)
		sum += p[i]
	}
	keep, cum := len(idx), 0.0
	for i := range p {
		p[i] /= sum
	}
	for i := range p {
		cum += p[i]
		if cum >= s.TopP {
			keep = i + 1
			break
		}
	}
	mass := 0.0
	for _, q := range p[:keep] {
		mass += q
	}
	u := s.rng.Float64() * mass
	acc := 0.0
	for i := 0; i < keep; i++ {
		acc += p[i]
		if u < acc {
			return idx[i]
		}
	}
	return idx[keep-1]
}

// argmax returns the first index of the largest value (transformers' greedy choice).
func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
