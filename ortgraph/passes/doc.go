// Package passes holds the rewrite passes `ortq prepare` runs over a Llama ONNX graph, one
// pass per file, each a value in the style of golang.org/x/tools/go/analysis:
//
//	FindLinears  locate the decoder's Linear layers and name them by module path
//	Quantize     Linear weights → 4-bit com.microsoft.MatMulNBits
//	HalfSoftmax  Cast(fp16→fp32) → Softmax → Cast(→fp16) → one fp16 Softmax
//	RMSNorm      decomposed RMSNorm → one SimplifiedLayerNormalization (ORT's RMSNorm kernel)
//	DQForward    4-bit Linears of training graphs → DequantizeLinear (per axis) + MatMul
//	LoRA         add PEFT-compatible LoRA adapters on the target Linears (hashed dropout masks)
//	Loss         append Hugging Face's causal-LM loss (sum, count and mean), or the chunked
//	             lm_head + loss in a fixed number of sequence blocks (no Loop)
//	Backward     reverse-mode gradients of the loss sum w.r.t. the LoRA tensors
//	Recompute    per-layer recomputation of activations in the backward pass
//	ORTCompat    adapt exporter output to ONNX Runtime 1.29 kernels
//
// Passes are run by ortgraph.RunPasses, which orders them by Requires and wraps their
// errors with the pass name.
package passes
