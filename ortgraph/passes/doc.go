// Package passes holds the rewrite passes `ortq prepare` runs over a Llama ONNX graph, one
// pass per file, each a value in the style of golang.org/x/tools/go/analysis (its
// requirements in brackets):
//
//	FindLinears  locate the decoder's Linear layers and name them by module path (reads only)
//	ORTCompat    adapt exporter output to ONNX Runtime 1.29 kernels (RotaryEmbedding caches)
//	Quantize     Linear weights → 4-bit com.microsoft.MatMulNBits (int4) or MatMulBnb4
//	             (nf4/fp4, absmax optionally double-quantized) [FindLinears]
//	HalfSoftmax  Cast(fp16→fp32) → Softmax → Cast(→fp16) → one fp16 Softmax
//	Rotary       decomposed rotary embedding (Slice/Neg/Concat/Mul/Add) → one opset-23
//	             RotaryEmbedding
//	DocMask      attention_mask as document ids (a block-diagonal causal mask) and rotary
//	             positions from a position_ids input, for packing documents apart
//	GroupedKV    grouped-query attention's repeated K/V heads (Unsqueeze/Expand/Reshape) →
//	             products over the kv heads themselves (the query side regrouped)
//	RMSNorm      decomposed RMSNorm → one SimplifiedLayerNormalization (ORT's RMSNorm kernel)
//	DQForward    int4 Linears of training graphs → DequantizeLinear (per axis) + MatMul;
//	             MatMulBnb4 stays, its bytes read once by both directions [Quantize]
//	LoRA         PEFT-compatible LoRA adapters on the target Linears, with dropout masks
//	             hashed from a seed input (dropout.go) [FindLinears, Quantize]
//	Loss         Hugging Face's causal-LM loss (sum, count and mean), or the chunked lm_head
//	             + loss in a fixed number of sequence blocks, no Loop (chunked_loss.go) [FindLinears]
//	Backward     reverse-mode gradients of the loss sum w.r.t. the LoRA tensors [LoRA, Loss]
//	AttentionGrad attention's softmax gradient from rowsum(dO⊙O), folded into the dP
//	             product (no reduction or broadcast over the scores) [Backward]
//	AttentionForward an attention whose scores and probabilities nothing else reads (the
//	             first forward of a recomputing training graph) → one opset-23 Attention
//	             (prepare --attention-kernel attention)
//	AttentionForwardMHA the same as one com.microsoft.MultiHeadAttention, kv heads repeated
//	             per query head (prepare's default, --attention-forward)
//	ResidualNorm a residual Add and the RMSNorm it feeds, whose inv_std_var nobody reads (the
//	             first forward of a recomputing training graph) → one
//	             com.microsoft.SkipSimplifiedLayerNormalization (prepare --fuse-residual-norm)
//	Recompute    per-layer recomputation of activations in the backward pass, by policy
//	             (every activation, or all but the Linears' products; top layers kept)
//	             [Backward, LoRA, FindLinears]
//	DeviceStep   a training graph as one device-resident optimizer step: flat LoRA/AdamW/
//	             accumulator state in and out, accumulation, overflow check, gradient
//	             clipping and AdamW inside
//	NBitsForward forward products of 4-bit Linears back to MatMulNBits, DequantizeLinear kept
//	             for dx (on the device step; prepare --dequantize-forward skips it)
//	Bnb4Forward  NF4/FP4 forward products as FusedMatMul(transB) over W dequantized in the
//	             graph instead of MatMulBnb4, which a CUDA graph cannot replay (the device
//	             step, with prepare --dequantize-forward)
//	DenseBase    every 4-bit weight read through one dequantization of its initializers,
//	             which ONNX Runtime folds at load (a dense base), forward products as
//	             FusedMatMul(transB) (the dense device steps)
//	SwiGLUForward the float16 MLP activation silu(g)·u, where only it reads σ(g) and
//	             silu(g) → one ai.ortq.SwiGLU (package kernels; prepare --fused-kernels)
//	ScaleMatMul  a multiplication by a scalar read only by GEMMs, or of a GEMM's sole
//	             product → the GEMMs' FusedMatMul alpha (prepare --fold-scales)
//	RotaryKernel float16 RotaryEmbedding with position ids → one ai.ortq.Rotary
//	             (prepare --attention-kernels)
//	MaskedSoftmax float16 Softmax(Add(scores, mask)) over the last axis → one
//	             ai.ortq.MaskedSoftmax (prepare --attention-kernels)
//	RMSNormKernel float16 SimplifiedLayerNormalization (last axis, float32 statistics) →
//	             one ai.ortq.RMSNorm (prepare --norm-kernels)
//	NormGradSum  Sum(res, RMSNormGrad(x, w, r, dy)) → RMSNormGrad(x, w, r, dy, res)
//	             (prepare --norm-kernels)
//	Bnb4Kernel   float16 NF4/FP4 dequantization chains a step runs → one
//	             ai.ortq.DequantBnb4 (prepare --bnb4-kernel)
//
// prepare runs HalfSoftmax, Quantize, Rotary, DocMask (unless --plain-mask), GroupedKV,
// ORTCompat and RMSNorm on the base graph (so every graph, device steps included, takes
// document ids), then LoRA, Loss (and DQForward, Backward, AttentionGrad — unless
// --generic-softmax-grad — and Recompute for training) on clones of it, to which it
// provides the base's FindLinears and Quantize results; DeviceStep and NBitsForward
// (unless --dequantize-forward; with it and an NF4/FP4 base, Bnb4Forward) run on a copy
// of each recomputation policy's training graph: the per-layer one, the selective one (Linear products kept) and the training graph
// without recomputation; for a 4-bit base DeviceStep and DenseBase run on one more copy of
// each (the dense steps). SwiGLUForward, RotaryKernel, MaskedSoftmax, RMSNormKernel,
// NormGradSum, Bnb4Kernel and ScaleMatMul run last on every training graph, the device steps
// and the host's alike.
//
// Passes are run by ortgraph.RunPasses (or a Context's Run), which validates the
// declarations and the options first, orders the passes by Requires and wraps their errors
// with the pass name. Each pass declares the type of its result (Pass.ResultType), which
// later passes read with ortgraph.ResultOf, and the five that take options declare their
// own options type (options.go: QuantizeOptions, LoRAOptions, LossOptions,
// BackwardOptions, RecomputeOptions), whose Validate method runs before any pass does; a pass reads its
// options with ortgraph.OptionsOf. TestDocRequirements keeps the bracketed requirements
// above equal to the passes' Requires. Each pass has
// a golden of its own in testdata/ (goldens_test.go, rmsnorm_test.go, passes_test.go), most
// on a hand-built one-layer decoder or a few nodes.
package passes
