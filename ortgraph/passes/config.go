package passes

import "github.com/ortq/ortq/quantize"

// Config is what the passes read from ctx.Config.
type Config struct {
	// Targets are Linear kinds to adapt: q_proj, k_proj, v_proj, o_proj, gate_proj,
	// up_proj, down_proj, lm_head.
	Targets []string
	Rank    int
	Alpha   float64
	// Dropout is the LoRA dropout probability; 0 omits the dropout (evaluation).
	Dropout float64
	// Bits is 4 (quantize the base) or 16 (keep it as it is).
	Bits  int
	Quant quantize.Options
	// QuantizeLMHead also quantizes lm_head (kept 16-bit by default, like bitsandbytes).
	QuantizeLMHead bool
	// Train marks the training graph (as opposed to the evaluation graph).
	Train bool
	// LossChunks > 0 computes lm_head and the loss in that many blocks along the
	// sequence (see chunked_loss.go); 0 appends the plain loss after the logits.
	LossChunks int
	// Recompute says what the Recompute pass recomputes; the zero value recomputes every
	// activation of every decoder layer.
	Recompute RecomputePolicy
}

// RecomputePolicy trades memory for time in the Recompute pass.
type RecomputePolicy struct {
	// KeepLayers is the number of decoder layers, counted from the top, whose activations
	// the forward pass keeps (not recomputed); 0 recomputes every layer.
	KeepLayers int
	// KeepProducts keeps the base Linears' products (the outputs of the 4-bit or 16-bit
	// weight GEMMs, after the LoRA sum where a Linear has an adapter) from the forward pass
	// in the layers that are recomputed: their recomputation then re-runs the norms,
	// rotary, attention and activation functions but none of the Linears' GEMMs.
	KeepProducts bool
}

// Kinds lists the Linear kinds of a Llama decoder, in module order.
var Kinds = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

func cfg(ctxConfig any) *Config {
	c, ok := ctxConfig.(*Config)
	if !ok {
		panic("passes: ctx.Config is not *passes.Config")
	}
	return c
}
