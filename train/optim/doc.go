// Package optim is the optimizer's arithmetic of a training step, on gradients in Go
// memory: AdamW (torch's _single_tensor_adam(w) op by op in float32), the fp16 loss scaler
// (torch.amp.GradScaler), Hugging Face's learning-rate schedules, gradient clipping
// (torch.nn.utils.clip_grad_norm_) and token-weighted gradient accumulation. It imports no
// ONNX Runtime (TestNoONNXRuntime checks), so it is tested, and can be reused, without one;
// package train runs the graphs and calls it.
package optim
