// Package export turns prepared artifacts and a trained adapter into an inference model
// ONNX Runtime runs directly (`ortq export`): a Llama decoder with a KV cache in the layout
// onnxruntime-genai's Llama models use (inputs input_ids, attention_mask, position_ids,
// past_key_values.{i}.key/value; outputs logits, present.{i}.key/value), a
// genai_config.json and the tokenizer files beside it. With --kv-cache shared (gqa.go) the
// cache is onnxruntime-genai's past_present_share_buffer layout instead: fixed-length buffers
// that com.microsoft.GroupQueryAttention writes in place, inputs input_ids and
// attention_mask only, and its decode graph is fused (fuse.go; --fuse=false writes it
// unfused): q, k and v as one MatMulNBits into GroupQueryAttention's packed-QKV form, the
// LoRA of targets that read one input as one A product and one block-B MatMul and Add per
// base output (α/r folded into B), each residual Add and the RMSNorm after it as one
// SkipSimplifiedLayerNormalization — 14 nodes a layer instead of 23 with LoRA on q and v.
// The concat layout is never fused.
//
// Why build the graph anew instead of rewriting the eval graph: the eval graph is whatever
// the exporter wrote (a dynamo export, an optimum export, ortq's own import) with the loss
// appended, and none of them has a cache. A Llama decoder is a small fixed function of its
// config, so the inference graph is written node by node here (the same function hfimport
// writes, plus the cache concat and an offset causal mask) and takes from the eval graph
// only what training saw: the embedding, the RMSNorm weights and epsilon, and every Linear
// as it stands — the 4-bit MatMulNBits or MatMulBnb4 bytes the model was trained on are
// copied, never re-quantized (a double-quantized NF4/FP4 absmax keeps its 8-bit form and the
// small chain that dequantizes it, see bnb4.go). Initializers keep pointing at the artifacts' weights.bin until they are
// written, so exporting a multi-GB model streams its weights.
//
// LoRA comes three ways: separate low-rank MatMuls beside each target Linear (x·Aᵀ·Bᵀ·α/r,
// the eval graph's own arithmetic, so the logits are the eval graph's; in the fused shared
// graph packed as above, α/r applied to B), merged into the
// base weight (`--merge`: W + (α/r)·B·A, dequantized, in the graph's float type), or as
// optional graph inputs with zeros as defaults, for ONNX Runtime's LoRA adapter API and an
// `.onnx_adapter` file (adapterfile.go).
//
// The rotary tables, attention heads and epsilon come from the Hugging Face config.json of
// the model (beside the source graph, in the checkpoint directory prepare was given, or
// named with --hf-config), checked against the manifest.
package export
