// Package bench is the benchmark harness behind `ortq bench`: it runs optimizer steps of
// prepared artifacts on random token batches and measures what a fine-tune costs and buys
// (step time p50/p95, tokens/s, peak GPU memory through NVML beside ONNX Runtime's own arena
// figures (Session.AllocatorStats: in use, peak in use, reserved), peak host RSS, MFU, and
// optionally eval perplexity before and after the steps), over a sweep of options, and
// writes JSON + Markdown reports, plots and a memory timeline.
//
// Why a harness of its own rather than timing `ortq train`: a benchmark must measure the
// same workload a peer (bench/peer/torch_peft.py, PyTorch+PEFT) runs — fixed shapes, every
// position a real token, warm-up excluded — and it must be repeatable enough for CI to gate
// regressions on (`ortq bench compare`). Results are one JSON schema (Result) for ortq and
// peers alike, so a peer's file merges into the same table.
//
// How a point is measured (run.go): Run resolves the base point and its artifacts (prepared
// here from --model or a --preset, or given as --artifacts), expands the sweep, and for each
// point (runner.point) evaluates the starting adapter on an eval-only engine, then opens a
// training engine of its own and times one optimizer step per synthetic batch through the
// same train.Stepper `ortq train` uses (the host step, or the device-resident step with or
// without CUDA graphs: --step), so the optimizer step exists once. With a --device list it
// opens one training engine per device and each step runs one micro-batch on each, through
// the data-parallel Steppers; GPU memory is sampled on the first device. The point's peak host
// RSS and ONNX Runtime arena figures cover that engine's life only; the evaluation after
// the steps uses another eval-only engine, so no evaluation session inflates the peaks.
// Throughput, FLOPs (flops.go) and MFU against the GPU's dense fp16 peak follow from the
// step times after the warm-up, which a point extends over the step's CUDA-graph captures
// (train.Warmer) and says so in its notes.
package bench
