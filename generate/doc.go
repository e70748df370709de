// Package generate runs a model written by `ortq export` token by token (`ortq generate`):
// one prefill run over the prompt, then one run per new token that feeds the previous run's
// present.{i}.key/value back as past_key_values.{i}.key/value, with greedy decoding or
// sampling (temperature, top-k, top-p, seeded), stopping at EOS or --max-new-tokens.
//
// Why not onnxruntime-genai: it is a separate C++ library with its own release cadence; the
// exported folder stays loadable by it (genai_config.json), but ortq itself needs nothing
// beyond the ONNX Runtime it already drives. On the CPU the cache lives in Go memory between
// runs (ortrun's sessions take and return host tensors); on CUDA it stays in the session's
// device memory (resident.go), so a step moves only its ids in and its logits out.
//
// An export with a shared KV cache (export.KVShared) is decoded by batch.go instead: fixed
// cache buffers written in place, several prompts as one batch (GenerateBatch), a decode
// step whose bound buffers never move — captured in a CUDA graph on CUDA — and the argmax
// on the device (pick.go), so a step moves the mask in and one id per row out.
package generate
