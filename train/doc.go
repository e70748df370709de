// Package train is `ortq train`'s training loop and its building blocks.
//
//   - The Trainer (trainer.go; Run in loop.go wraps it for an Engine) is the loop: baseline
//     and periodic evaluation, a learning-rate schedule, optimizer steps of GradAccum
//     micro-batches, overflow-skip accounting (--max-skips) and the stop on a non-finite
//     fp32 step, checkpoints every SaveEvery steps (Keep of them) and resume, a checkpoint
//     and a clean stop (InterruptedError) when its context is cancelled, then the adapter
//     and the run report. It reads its artifacts and evaluates through a Backend, which
//     *Engine is; its tests (loop_fake_test.go) drive a Go fake instead, in milliseconds.
//   - A Stepper (step.go) is one optimizer step, whatever runs it: token-weighted gradient
//     accumulation, the GradScaler's overflow check, gradient clipping (optim.ClipGrads) and AdamW. NewHostStepper runs the
//     training graph once per micro-batch and keeps parameters, gradients and optimizer
//     state in Go memory (torch's AdamW arithmetic to the last ulp); NewDeviceStepper
//     (devicestep.go) runs the device-resident step graph, which keeps them in the session's
//     device memory, with one fixed batch shape that CUDA graphs can capture;
//     NewMultiStepper (multistep.go) spreads each step's micro-batches over one engine per
//     device and reduces their gradients on the host; NewMultiDeviceStepper
//     (multidevicestep.go) does the same over device-resident steps, each device keeping its
//     accumulation in its memory and the host adding the devices' sums and running AdamW.
//     NewRankStepper (rankstep.go) is one process's share of data parallelism over processes:
//     its device step accumulates its micro-batches, a Collective (NCCL, dist.NCCL) sums the
//     gradient sums in device memory across the ranks, and every rank applies the same update
//     on its device (passes.OptimizerGraph).
//     All of them end a step in finishStep (the scaler's verdict), and the host-state ones
//     share hostState. Config.NewStepper picks another Stepper than the engine's own;
//     `ortq bench` times the same Steppers.
//   - The Engine (engine.go) holds the artifacts' ONNX Runtime sessions: the training graph
//     (or the device step graph) and evaluation.
//   - Checkpoints (checkpoint.go: atomic, fsynced, with what a resume must match), the memory
//     log (runlog.go; host memory sampled by internal/runreport's RSSMonitor), the progress
//     display (progress.go) and the report (report.go, formatted with internal/runreport,
//     which bench's report shares).
//   - Samples (sample.go): with Config.SamplePrompts and a Sampler (Hooks.Sampler; the CLI's
//     decodes greedily through an export of the artifacts, cmd/ortq/samplemodel.go), a round
//     of completions of the current LoRA values every SampleEvery steps and at the end,
//     between optimizer steps, into the log, run.jsonl and the report.
//
// The CLI (cmd/ortq/train.go) parses options, tokenizes the data, cancels the context on
// SIGINT/SIGTERM and calls Run; the run setup both it and bench use (the step kind, the
// recomputation policy of auto, one engine per device, the Stepper over them) is
// runsetup.go. The optimizer, schedules, scaler, clipping and accumulator are package
// train/optim: pure Go, deterministic, tested without ONNX Runtime (which optim may not
// import: TestNoONNXRuntime), used under their own names (optim.AdamW, optim.Param…);
// safetensors I/O lives in internal/safetensors and fp16/bf16 conversion in internal/half.
//
// Everything that PyTorch also does is done the PyTorch way, because the
// project's proof compares against PyTorch+PEFT to 1e-6:
//
//   - AdamW follows torch's _single_tensor_adam(w) op by op in float32
//     (see optim/adamw.go for the exact sequence and where ulps can still differ).
//   - Schedules are Hugging Face's get_*_schedule_with_warmup lambdas; the
//     learning rate of optimizer step k (0-based) is base_lr · Multiplier(k),
//     as torch's LambdaLR yields before its first scheduler.step().
//   - GradScaler mirrors torch.amp.GradScaler (init 2^16, ×2 after 2000 clean
//     steps, ×0.5 and skip on inf/NaN, unscale by multiplying with the
//     float32 reciprocal computed in float64).
//   - Clipping is torch.nn.utils.clip_grad_norm_ (the L2 norm of the per-tensor
//     norms, the factor min(1, max_norm · 1/(norm + 1e-6)) in float32), applied
//     to the unscaled mean gradients before AdamW, as Hugging Face Trainer does.
//   - A resume to another total step count takes the new total's schedule from
//     the checkpoint's step on, as Trainer does when it reloads its scheduler.
//
// One optimizer step of the host Stepper reads:
//
//	acc.Reset()
//	for each micro-batch: lossSum, tokens, grads := run graph(scale = scaler.Scale())
//	                      acc.Add(grads, lossSum, tokens)
//	meanLoss, _ := acc.Finish(grads)          // grads = Σ grad / Σ tokens
//	inf := scaler.Unscale(grads)
//	gradNorm := optim.ClipGrads(grads, maxGradNorm)  // norm before clipping; no clip when inf
//	if inf { scaler.Update(true); skip }
//	else { opt.Step(grads, cfg.LR*sched(step)); scaler.Update(false); step++ }
package train
