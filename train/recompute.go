package train

import (
	"fmt"
	"strings"

	"github.com/ortq/ortq/manifest"
)

// Device-step memory model behind --recompute auto. A CUDA step's peak is the weights
// (weights.bin, read once), a fixed part (the CUDA context, cuBLAS/cuDNN workspaces, the
// arena's slack: 0.8 GiB measured on H100 and H200) and the activations, which grow with the
// micro-batch's tokens. Per token and decoder layer, in fp16 bytes, with h the hidden size,
// n = h/128 attention heads and S the sequence length:
//   - layer: the layer's input (2h) kept as its checkpoint, plus one layer's working set and
//     the loss block once: measured 2.17 GiB at the Llama-3.2-3B shape, micro-batch 7 × 512
//     (0.65 MB a token), which 2·(L·h + 16h + 8·S·n) + 14·vocab/8 matches within 10 %;
//   - none: every activation of every layer, 2·(20h + 2·S·n) a layer (measured 14.82 GiB at
//     the same shape: 158 KB a layer and token; the formula gives 172 KB);
//   - selective: layer's, plus the products it keeps: q, k, v, gate and up outputs, 2·7h a
//     layer (the 3B shape's 21,504 values are exactly 7h).
const stepFixedBytes = 0.8 * (1 << 30)

// StepActivationBytes estimates the activation bytes of one device step of a recomputation
// policy with rows sequences of seqLen tokens.
func StepActivationBytes(m manifest.Model, policy string, rows, seqLen int) float64 {
	h, l, s := float64(m.Hidden), float64(m.Layers), float64(seqLen)
	n := max(h/128, 1)
	perToken := 2*(l*h+16*h+8*s*n) + 14*float64(m.Vocab)/8
	switch policy {
	case manifest.RecomputeNone:
		perToken = l*2*(20*h+2*s*n) + 14*float64(m.Vocab)/8
	case manifest.RecomputeSelective:
		perToken += l * 2 * 7 * h
	}
	return float64(rows) * s * perToken
}

// StepPeakBytes estimates the GPU memory peak of a device step: weights, the fixed part and
// the activations.
func StepPeakBytes(man *manifest.Manifest, policy string, rows, seqLen int) float64 {
	var weights float64
	for _, f := range man.DataFiles {
		weights += float64(f.Size)
	}
	return weights + stepFixedBytes + StepActivationBytes(man.Model, policy, rows, seqLen)
}

// RecomputeChoice is the policy ChooseRecompute picked, with the estimates it compared.
type RecomputeChoice struct {
	Policy    string
	Budget    float64            // bytes
	Estimates map[string]float64 // estimated peak bytes by policy
}

// String is the one line train and bench print and log.
func (c RecomputeChoice) String() string {
	var est []string
	for _, p := range []string{manifest.RecomputeNone, manifest.RecomputeSelective, manifest.RecomputeLayer} {
		if e, ok := c.Estimates[p]; ok {
			est = append(est, fmt.Sprintf("%s %.2f GiB", p, e/(1<<30)))
		}
	}
	return fmt.Sprintf("recompute auto: %s (estimated peaks %s; budget %.2f GiB)", c.Policy, strings.Join(est, ", "), c.Budget/(1<<30))
}

// ChooseRecompute returns the fastest recomputation policy whose estimated peak fits budget
// bytes, among the device steps the artifacts hold: none (no GEMM or attention runs twice),
// then selective, then layer, which is returned when nothing fits (the run's own memory
// check then refuses what cannot fit at all).
func ChooseRecompute(man *manifest.Manifest, budget float64, rows, seqLen int) RecomputeChoice {
	c := RecomputeChoice{Policy: manifest.RecomputeLayer, Budget: budget, Estimates: map[string]float64{}}
	chosen := false
	for _, p := range []string{manifest.RecomputeNone, manifest.RecomputeSelective, manifest.RecomputeLayer} {
		if man.Step(p) == nil {
			continue
		}
		c.Estimates[p] = StepPeakBytes(man, p, rows, seqLen)
		if !chosen && c.Estimates[p] <= budget {
			c.Policy, chosen = p, true
		}
	}
	return c
}
