package optim

import (
	"errors"
	"fmt"
	"math"
)

// GradAccumulator makes gradient accumulation token-weighted.
//
// Hugging Face's loss is the mean over the counted (non −100, shifted) tokens
// of a batch. Averaging k micro-batch means would weight a micro-batch with
// few tokens as much as one with many, so k micro-batches would not equal one
// batch of k. Instead the training graph returns, per micro-batch, the loss
// SUM, the token COUNT and the gradients of the loss sum (times the loss
// scale). The accumulator adds sums and counts; Finish divides by the total
// count, giving exactly the gradient of the mean loss over all tokens of the
// k micro-batches — the one-big-batch gradient.
//
// Sums are kept in float64: the order of accumulation then costs nothing
// measurable, so the result matches a single large batch to the graph's own
// float32 rounding. Non-finite values are summed as they are; the GradScaler
// detects them after Finish.
type GradAccumulator struct {
	names   []string
	sizes   map[string]int
	sums    map[string][]float64
	lossSum float64
	tokens  int64
	micro   int
}

// NewGradAccumulator prepares sums for the given parameters (their Data
// lengths are the gradient lengths).
func NewGradAccumulator(params []Param) *GradAccumulator {
	a := &GradAccumulator{sizes: map[string]int{}, sums: map[string][]float64{}}
	for _, p := range params {
		a.names = append(a.names, p.Name)
		a.sizes[p.Name] = len(p.Data)
		a.sums[p.Name] = make([]float64, len(p.Data))
	}
	return a
}

// Reset clears the sums for the next optimizer step.
func (a *GradAccumulator) Reset() {
	for _, s := range a.sums {
		clear(s)
	}
	a.lossSum, a.tokens, a.micro = 0, 0, 0
}

// Add accumulates one micro-batch: grads of its loss SUM, its loss sum and
// its counted token number. A micro-batch with 0 tokens is allowed (it adds
// nothing).
func (a *GradAccumulator) Add(grads map[string][]float32, lossSum float64, tokens int) error {
	return a.AddScaled(grads, 1, lossSum, tokens)
}

// AddScaled is Add for gradients that are the loss sum's divided by factor (the training
// graph's, seeded with loss scale ÷ tokens): they are multiplied by factor in float64.
func (a *GradAccumulator) AddScaled(grads map[string][]float32, factor float64, lossSum float64, tokens int) error {
	if tokens < 0 {
		return fmt.Errorf("grad accumulation: negative token count %d", tokens)
	}
	if len(grads) != len(a.sums) {
		return fmt.Errorf("grad accumulation: got %d gradients, expected %d", len(grads), len(a.sums))
	}
	for name, g := range grads {
		s, ok := a.sums[name]
		if !ok {
			return fmt.Errorf("grad accumulation: gradient %q matches no parameter", name)
		}
		if len(g) != len(s) {
			return fmt.Errorf("grad accumulation: gradient %q has %d elements, expected %d", name, len(g), len(s))
		}
	}
	for name, g := range grads {
		s := a.sums[name]
		for i, v := range g {
			s[i] += float64(v) * factor
		}
	}
	a.lossSum += lossSum
	a.tokens += int64(tokens)
	a.micro++
	return nil
}

// Tokens is the total counted tokens so far.
func (a *GradAccumulator) Tokens() int64 { return a.tokens }

// MicroBatches is the number of Add calls since Reset.
func (a *GradAccumulator) MicroBatches() int { return a.micro }

// ErrNoTokens is returned by Finish when no micro-batch had a counted token.
var ErrNoTokens = errors.New("grad accumulation: no counted tokens in this optimizer step")

// Finish writes Σgrad/Σtokens into out (allocating missing entries) and
// returns the mean loss Σloss/Σtokens. Gradients are still multiplied by the
// loss scale; unscale them next (the scale is a power of two, so the order of
// the two divisions does not change the result).
func (a *GradAccumulator) Finish(out map[string][]float32) (meanLoss float64, err error) {
	if a.tokens == 0 {
		return math.NaN(), ErrNoTokens
	}
	n := float64(a.tokens)
	for _, name := range a.names {
		s := a.sums[name]
		dst := out[name]
		if len(dst) != len(s) {
			dst = make([]float32, len(s))
			out[name] = dst
		}
		for i, v := range s {
			dst[i] = float32(v / n)
		}
	}
	return a.lossSum / n, nil
}
