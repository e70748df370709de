package passes

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ortq/ortq/quantize"
)

// The options of the passes that take any, one type per pass (its Pass.OptionsType),
// given to ortgraph.RunPasses in an ortgraph.Options keyed by pass and checked by their
// Validate methods before any pass runs. A new knob of a pass is a field of its type.

// QuantizeOptions are the Quantize pass's options.
type QuantizeOptions struct {
	// Bits is 4 (quantize the base) or 16 (keep it as it is).
	Bits int
	// Quant is the 4-bit format (block size, zero points): what Quantize writes, and what
	// an already 4-bit source graph must hold.
	Quant quantize.Options
	// LMHead also quantizes lm_head (kept 16-bit by default, like bitsandbytes).
	LMHead bool
}

// Validate checks Bits; the 4-bit format is checked by quantize.Quantize itself.
func (o QuantizeOptions) Validate() error {
	if o.Bits != 4 && o.Bits != 16 {
		return fmt.Errorf("bits = %d: use 4 (quantized base) or 16 (plain LoRA)", o.Bits)
	}
	return nil
}

// BackwardOptions are the Backward pass's options.
type BackwardOptions struct {
	// FusedKernels lets the gradient rules emit ortq's own ops (ortgraph.OrtqDomain), which
	// only sessions that register package kernels run: the float16 SwiGLU gradient as one
	// SwiGLUGrad node instead of eight elementwise ones.
	FusedKernels bool
	// FusedNormGrad lets the float16 RMSNorm rule emit one RMSNormGrad node of ortq's domain
	// where the norm's inv_std_var is saved.
	FusedNormGrad bool
}

// LoRAOptions are the LoRA pass's options.
type LoRAOptions struct {
	// Targets are Linear kinds to adapt: q_proj, k_proj, v_proj, o_proj, gate_proj,
	// up_proj, down_proj, lm_head.
	Targets []string
	Rank    int
	Alpha   float64
	// Dropout is the LoRA dropout probability; 0 omits the dropout (evaluation).
	Dropout float64
	// ShareDropoutMasks draws one dropout mask per input instead of one per target: the
	// targets that read one input (q_proj and v_proj) then see the same dropped elements,
	// and their A products run as one GEMM. PEFT draws one mask per target; without
	// dropout the products are merged either way.
	ShareDropoutMasks bool
}

// Validate checks the rank, the dropout probability and that every target is a Llama
// Linear kind.
func (o LoRAOptions) Validate() error {
	if o.Rank <= 0 {
		return fmt.Errorf("LoRA rank %d: must be positive", o.Rank)
	}
	if o.Dropout < 0 || o.Dropout >= 1 {
		return fmt.Errorf("LoRA dropout %g: must be in [0, 1)", o.Dropout)
	}
	for _, t := range o.Targets {
		t = strings.TrimSpace(t)
		known := t == "lm_head"
		for _, k := range Kinds {
			known = known || k == t
		}
		if !known {
			return fmt.Errorf("target %q is not a Llama Linear (use %s or lm_head)", t, strings.Join(Kinds, ", "))
		}
	}
	return nil
}

// LossOptions are the Loss pass's options.
type LossOptions struct {
	// Chunks > 0 computes lm_head and the loss in that many blocks along the sequence
	// (see chunked_loss.go); 0 appends the plain loss after the logits.
	Chunks int
	// Train marks the training graph (as opposed to the evaluation graph): the chunked
	// loss then also computes the gradient of the loss with respect to lm_head's input.
	Train bool
	// LMHeadLoRA says that the LoRA pass adapts lm_head, which the chunked loss refuses.
	LMHeadLoRA bool
}

// Validate checks that Chunks is not negative.
func (o LossOptions) Validate() error {
	if o.Chunks < 0 {
		return fmt.Errorf("loss chunks %d: use a number of blocks, or 0 for the plain loss", o.Chunks)
	}
	return nil
}

// RecomputeOptions say what the Recompute pass recomputes, trading memory for time; the
// zero value recomputes every activation of every decoder layer. The pass checks
// KeepLayers against the graph's layers.
type RecomputeOptions struct {
	// KeepLayers is the number of decoder layers, counted from the top, whose activations
	// the forward pass keeps (not recomputed); 0 recomputes every layer.
	KeepLayers int
	// KeepProducts keeps the base Linears' products (the outputs of the 4-bit or 16-bit
	// weight GEMMs, after the LoRA sum where a Linear has an adapter) from the forward pass
	// in the layers that are recomputed: their recomputation then re-runs the norms,
	// rotary, attention and activation functions but none of the Linears' GEMMs.
	KeepProducts bool
	// KeepMasks keeps the LoRA dropout masks (one bool a masked input element, e.g. hidden
	// bytes a token and layer with LoRA on q and v sharing one mask) from the forward pass
	// instead of recomputing them from their hash: the recomputation then skips the hash's
	// two full-size int32 kernels a mask.
	KeepMasks bool
	// KeepKinds keeps the products of the Linears of these kinds (as KeepProducts does for
	// every kind) in the layers that are recomputed: with k_proj and v_proj (prepare
	// --keep-kv), 2·(k and v widths) bytes a token and layer for two GEMMs fewer in each
	// layer's recomputation (and v's LoRA product, when v has an adapter).
	KeepKinds []string
}

// Validate checks that KeepKinds names Llama decoder Linear kinds.
func (o RecomputeOptions) Validate() error {
	for _, k := range o.KeepKinds {
		if !slices.Contains(Kinds, k) {
			return fmt.Errorf("recompute keeps the products of %q: not a Llama decoder Linear (use %s)", k, strings.Join(Kinds, ", "))
		}
	}
	return nil
}

// Kinds lists the Linear kinds of a Llama decoder, in module order.
var Kinds = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
