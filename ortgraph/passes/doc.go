// Package passes holds the rewrite passes `ortq prepare` runs over a Llama ONNX graph, one
// pass per file, each a value in the style of golang.org/x/tools/go/analysis:
//
//	FindLinears  locate the decoder's Linear layers and name them by module path
//	Quantize     Linear weights → 4-bit com.microsoft.MatMulNBits
//	RMSNorm      decomposed RMSNorm → one SimplifiedLayerNormalization (ORT's RMSNorm kernel)
//	LoRA         add PEFT-compatible LoRA adapters on the target Linears
//	Loss         append Hugging Face's causal-LM loss (sum, count and mean)
//	Backward     reverse-mode gradients of the loss sum w.r.t. the LoRA tensors
//
// Passes are run by ortgraph.RunPasses, which orders them by Requires and wraps their
// errors with the pass name.
package passes
