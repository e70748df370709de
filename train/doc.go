// Package train is `ortq train`'s training loop and its building blocks: the Engine
// (engine.go: the artifacts' ONNX Runtime sessions, one forward+backward step per
// micro-batch), Run (loop.go: baseline and periodic evaluation, token-weighted gradient
// accumulation, GradScaler, AdamW, learning-rate schedules, checkpoints and resume,
// a checkpoint and a clean stop when its context is cancelled, the adapter and the run
// report), checkpoints (checkpoint.go), the memory log (runlog.go, rss.go) and the
// progress display. The CLI (cmd/ortq/train.go) parses options, tokenizes the data,
// cancels the context on SIGINT/SIGTERM and calls Run. The optimizer, schedules, scaler and
// accumulator are pure Go, deterministic and tested without ONNX Runtime; safetensors
// I/O lives in internal/safetensors and fp16/bf16 conversion in internal/half.
//
// Everything that PyTorch also does is done the PyTorch way, because the
// project's proof compares against PyTorch+PEFT to 1e-6:
//
//   - AdamW follows torch's _single_tensor_adam(w) op by op in float32
//     (see adamw.go for the exact sequence and where ulps can still differ).
//   - Schedules are Hugging Face's get_*_schedule_with_warmup lambdas; the
//     learning rate of optimizer step k (0-based) is base_lr · Multiplier(k),
//     as torch's LambdaLR yields before its first scheduler.step().
//   - GradScaler mirrors torch.amp.GradScaler (init 2^16, ×2 after 2000 clean
//     steps, ×0.5 and skip on inf/NaN, unscale by multiplying with the
//     float32 reciprocal computed in float64).
//
// One optimizer step of the loop is meant to read:
//
//	acc.Reset()
//	for each micro-batch: lossSum, tokens, grads := run graph(scale = scaler.Scale())
//	                      acc.Add(grads, lossSum, tokens)
//	meanLoss, _ := acc.Finish(grads)          // grads = Σ grad / Σ tokens
//	if scaler.Unscale(grads) /* found inf */ { scaler.Update(true); skip }
//	else { opt.Step(grads, cfg.LR*sched(step)); scaler.Update(false); step++ }
package train
