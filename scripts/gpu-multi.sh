#!/usr/bin/env bash
# GPU machine with two GPUs (nvidia-h200-x2), one call: issue 15's measurement of
# data-parallel training over the GPUs of one host (`ortq train --device cuda:0,cuda:1`,
# train.NewMultiStepper), not yet run:
#   1. synth (4-bit) + prepare unless /tmp/m-a exists (REUSE=1 keeps it);
#   2. `ortq train` on the Llama-3.2-3B shape, micro-batch 7 per GPU, seq 512, recompute per
#      layer, STEPS steps, all in this call:
#        one-host   one GPU, --step host,   --grad-accum 2 (the two-GPU run's global batch)
#        one-device one GPU, --step device, --grad-accum 2
#        two-host   cuda:0,cuda:1, --step host,   --grad-accum 2
#        two-device cuda:0,cuda:1, --step device, --grad-accum 2
#        one-graph / two-graph: the same with --step graph (the default on CUDA)
#   3. a summary: tokens/s and its ratio to each one-GPU run (target ≥ 1.9×), peak GPU
#      memory (the busiest GPU; target within 5 % of one GPU), and the largest relative
#      difference of the per-step losses from the one-GPU host run's (target ≤ 1 %).
# Env: PRESET (llama-3.2-3b), STEPS (20), MB (7), REUSE=1, TRAIN_ARGS.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; STEPS=${STEPS:-20}; MB=${MB:-7}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
log "start: $(wc -l < "$OUT/gpu.txt") GPU(s): $(head -1 "$OUT/gpu.txt")"
if [ "${REUSE:-0}" != 1 ] || [ ! -f /tmp/m-a/manifest.json ]; then
  timeout 200 $Q synth --preset $PRESET --quantize --out /tmp/m-m --quiet --force > "$OUT/synth.txt" 2>&1; log "synth rc $?"
  timeout 300 $Q prepare --model /tmp/m-m/model.onnx --out /tmp/m-a --quiet --force > "$OUT/prepare.txt" 2>&1; log "prepare rc $?"
fi
# Enough packed 512-token blocks for STEPS × 2 × MB sequences plus the eval split.
for i in $(seq 1 20000); do echo "sample $i of the corpus says $((i*7)) things about $((i%97)) topics and more"; done > /tmp/m-data.txt
common="--artifacts /tmp/m-a --data /tmp/m-data.txt --tokenizer default --max-seq-len 512 --micro-batch $MB --grad-accum 2
  --max-steps $STEPS --recompute layer --max-eval-batches 1 --save-every 0 --log-every 1 --quiet --force ${TRAIN_ARGS:-}"
run() { # name, args...
  local name=$1; shift
  timeout 500 $Q train $common --out "$OUT/$name" "$@" > "$OUT/$name.txt" 2>&1
  log "$name rc $?: $(tail -1 "$OUT/$name.txt")"
}
run one-host --device cuda:0 --step host
run one-device --device cuda:0 --step device
run two-host --device cuda:0,cuda:1 --step host
run two-device --device cuda:0,cuda:1 --step device
run one-graph --device cuda:0 --step graph
run two-graph --device cuda:0,cuda:1 --step graph
python3 - "$OUT" "$(dirname "$0")" <<'PY' | tee -a "$OUT/progress.txt"
import json, os, sys, glob
out, G = sys.argv[1], 2**30
sys.path.insert(0, sys.argv[2])
from runs import load_run
def load(name):
    return load_run(os.path.join(out, name))
runs = {n: load(n) for n in ("one-host", "one-device", "one-graph", "two-host", "two-device", "two-graph")}
base = runs["one-host"]
for n, r in runs.items():
    if r is None:
        print(f"{n}: no report"); continue
    s = f"{n}: {r['tokens_per_second']:.0f} tokens/s, step p50 {r['step_time']['p50_ms']:.1f} ms, peak GPU {r.get('peak_gpu_bytes', 0) / G:.2f} GiB"
    per = r.get("peak_gpu_per_device_bytes") or {}
    if per:
        s += " (" + ", ".join(f"{d} {v / G:.2f}" for d, v in sorted(per.items())) + ")"
    for m in ("one-host", "one-device", "one-graph"):
        if n.startswith("two") and runs[m]:
            s += f", {r['tokens_per_second'] / runs[m]['tokens_per_second']:.2f}x {m}"
            s += f" (peak {r.get('peak_gpu_bytes', 0) / max(1, runs[m].get('peak_gpu_bytes', 0)):.3f}x)"
    if base and r is not base and r["losses"] and base["losses"]:
        d = max(abs(x - y) / abs(y) for x, y in zip(r["losses"], base["losses"]))
        s += f", losses vs one-host max rel {d:.2e} over {len(r['losses'])} steps"
    print(s)
PY
