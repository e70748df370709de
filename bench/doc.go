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
package bench
