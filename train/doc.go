// Package train holds the pure-Go building blocks of `ortq train`: the
// optimizer, learning-rate schedules, loss scaling, token-weighted gradient
// accumulation, safetensors I/O, fp16/bf16 conversion, the run report and the
// progress display. The loop that ties them to ONNX Runtime sessions lives
// with the CLI; everything here is deterministic and testable without ORT.
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
