package train

import (
	"fmt"
	"strings"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph/passes"
)

// Device-step memory model behind --recompute auto. A CUDA step's peak is the weights
// (weights.bin, read once), a fixed part (the CUDA context, cuBLAS/cuDNN workspaces, the
// arena's slack: 0.8 GiB measured on H100 and H200) and the activations, which grow with the
// micro-batch's tokens. Per token and decoder layer, in fp16 bytes, with h the hidden size,
// n = h/128 attention heads and S the sequence length:
//   - layer: the layer's input (2h) kept as its checkpoint, plus one layer's working set and
//     the loss block once: measured 2.17 GiB at the Llama-3.2-3B shape, micro-batch 7 × 512
//     (0.65 MB a token), which 2·(L·h + 16h + 8·S·n) + 7·vocab/K matches within 10 % (the
//     loss block: one of K = passes.AutoLossChunks blocks of half-precision logits,
//     log-probabilities and probabilities, ≈ 7 bytes a vocabulary entry);
//   - none: every activation of every layer, 2·(22h + 2·S·n) a layer (measured 17.37 GiB at
//     the same shape with the attention gradient's row sums keeping O, H100 2026-12-07;
//     the formula gives 17.2 GiB with the loss block);
//   - selective: layer's, plus the products it keeps: q, k, v, gate and up outputs, 2·7h a
//     layer (the 3B shape's 21,504 values are exactly 7h; measured 6.63 GiB, the formula
//     gives 6.2);
//   - layer and selective, with prepare --keep-dropout-masks: plus the kept masks,
//     manifest.Model.KeptMaskBytes (h a layer with LoRA on q and v sharing one mask, 0.29
//     GiB at the 3B shape, micro-batch 7 × 512; 2h with a mask per target: 0.57 GiB,
//     measured +0.58 and +0.63 GiB on two H100s);
//   - layer, with prepare --keep-kv: plus the kept k and v products,
//     manifest.Model.KeptProductBytes.
const stepFixedBytes = 0.8 * (1 << 30)

// StepActivationBytes estimates the activation bytes of one device step of a recomputation
// policy with rows sequences of seqLen tokens.
func StepActivationBytes(m manifest.Model, policy string, rows, seqLen int) float64 {
	h, l, s := float64(m.Hidden), float64(m.Layers), float64(seqLen)
	n := max(h/128, 1)
	perToken := 2*(l*h+16*h+8*s*n) + 7*float64(m.Vocab)/passes.AutoLossChunks
	switch policy {
	case manifest.RecomputeNone:
		perToken = l*2*(22*h+2*s*n) + 7*float64(m.Vocab)/passes.AutoLossChunks
	case manifest.RecomputeSelective:
		perToken += l*2*7*h + float64(m.KeptMaskBytes)
	default:
		perToken += float64(m.KeptMaskBytes + m.KeptProductBytes)
	}
	return float64(rows) * s * perToken
}

// StepPeakBytes estimates the GPU memory peak of a device step (a policy, or its
// manifest.DenseStep): weights, the fixed part and the activations; a dense base adds its
// float16 weights less the 4-bit bytes.
func StepPeakBytes(man *manifest.Manifest, key string, rows, seqLen int) float64 {
	policy, dense := manifest.SplitStepKey(key)
	var weights float64
	for _, f := range man.DataFiles {
		weights += float64(f.Size)
	}
	if dense {
		weights += man.DenseExtraBytes()
	}
	return weights + stepFixedBytes + StepActivationBytes(man.Model, policy, rows, seqLen)
}

// RecomputeChoice is the device step ChooseRecompute picked (a policy or its DenseStep key),
// with the estimates it compared.
type RecomputeChoice struct {
	Policy    string
	Budget    float64            // bytes
	Keys      []string           // the candidates, fastest first
	Estimates map[string]float64 // estimated peak bytes by key
}

// String is the one line train and bench print and log.
func (c RecomputeChoice) String() string {
	var est []string
	for _, k := range c.Keys {
		if e, ok := c.Estimates[k]; ok {
			est = append(est, fmt.Sprintf("%s %.2f GiB", k, e/(1<<30)))
		}
	}
	return fmt.Sprintf("recompute auto: %s (estimated peaks %s; budget %.2f GiB)", c.Policy, strings.Join(est, ", "), c.Budget/(1<<30))
}

// StepKeys lists device steps fastest first, as measured at the Llama-3.2-3B shape on an
// H100 (micro-batch 7): none 165.7 ms, selective 190.6 ms, layer 213.9 ms, and a dense base
// saving ≈ 0.5 ms a layer on each (the 4-bit dequantizations) — less than one policy step
// saves, so the order is none_dense, none, selective_dense, selective, layer_dense, layer.
// base (--base) says which bases to list: BaseAuto both, BaseDense or BaseFourBit one.
func StepKeys(base string) []string {
	var keys []string
	for _, p := range []string{manifest.RecomputeNone, manifest.RecomputeSelective, manifest.RecomputeLayer} {
		if base != BaseFourBit {
			keys = append(keys, manifest.DenseStep(p))
		}
		if base != BaseDense {
			keys = append(keys, p)
		}
	}
	return keys
}

// ChooseRecompute returns the first of keys (fastest first) whose device step the
// artifacts hold and whose estimated peak fits budget bytes, or the last they hold when
// none fits (the run's own memory check then refuses what cannot fit at all).
func ChooseRecompute(man *manifest.Manifest, budget float64, rows, seqLen int, keys []string) RecomputeChoice {
	c := RecomputeChoice{Policy: manifest.RecomputeLayer, Budget: budget, Estimates: map[string]float64{}}
	chosen := false
	for _, k := range keys {
		if man.Step(k) == nil {
			continue
		}
		c.Keys = append(c.Keys, k)
		c.Estimates[k] = StepPeakBytes(man, k, rows, seqLen)
		if !chosen {
			c.Policy = k
			chosen = c.Estimates[k] <= budget
		}
	}
	return c
}
