// Package hfimport builds ortq's Llama ONNX graph straight from a Hugging Face checkpoint
// (config.json + *.safetensors) in Go, and synthesizes the same graph with random weights for
// benchmarks and tests (`ortq import`, `ortq synth`).
//
// Why build the graph instead of exporting it: most users hold a checkpoint, not an ONNX
// file, and the PyTorch exporter needs Python, PyTorch and minutes of tracing. A Llama
// decoder is a small, fixed function of its config, so writing it out node by node is short,
// gives every Linear its Hugging Face module path (node `/model/layers.0/self_attn/q_proj/MatMul`,
// weight `model.layers.0.self_attn.q_proj.weight`) for passes.FindLinears, records the type and
// rank of every value for the autodiff, and lets the weights stream from the safetensors
// shards into one external data file without ever holding the checkpoint in memory.
//
// The graph computes what transformers' LlamaForCausalLM (eager attention, use_cache=False,
// no position_ids given) computes: position ids are 0..seq-1 (Range), the attention mask is
// causal + padding, additive with the dtype's lowest finite value. One deliberate difference:
// a query always attends to its own position even when that key is padding, so a fully padded
// query row never turns into NaN; outputs at unpadded positions are unchanged by this.
//
// Two spellings of the same function (Ops, `--ops`): decomposed (opset 21 primitives: RMSNorm
// as Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul in float32, rotary as Slice/Neg/Concat, attention
// as MatMul/Softmax/MatMul with an explicit GQA repeat), the default of `import` because every
// runtime has every op and it is node for node transformers' eager code; and fused (opset 23:
// RMSNormalization with stash_type 1, RotaryEmbedding in its position_ids form, Attention on
// 4-D [batch, heads, seq, head_dim] Q/K/V with GQA by head count and the same additive mask),
// opt-in: fewer nodes and no [batch, heads, seq, seq] tensor in the forward, but measured on an
// H200 the training step on ORT 1.29 CUDA was ten times slower than with the decomposed graph
// (677 vs 7,460 tokens/s at the Llama-3.2-3B shape), so both commands default to decomposed. Both declare the same
// weights in the same order and agree within float rounding (fused_test.go); the autodiff
// differentiates either.
//
// `synth --quantize` and `import --quantize` (and so `prepare --model HF_DIR` for a 4-bit
// base) write each decoder Linear as com.microsoft.MatMulNBits with the packed 4-bit bytes,
// scales and zero points that prepare's quantize pass would make from the same weights and
// flags (the writer generates a Linear whole, transposes it to [out, in] and packs it with
// package quantize), so a Llama-3.2-3B is 2.4 GB on disk instead of 6.4 GB and never has a
// full-precision copy; passes.FindLinears takes such nodes as prequantized Linears. With
// --quant nf4 or fp4 they are com.microsoft.MatMulBnb4 (bitsandbytes' layout, package
// quantize's QuantizeBnb4), with --double-quant behind the same absmax chain prepare writes.
package hfimport
