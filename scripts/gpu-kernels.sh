#!/usr/bin/env bash
# GPU machine, one call: the GPU-kernel issue's measurements on the Llama-3.2-3B shape (4-bit,
# LoRA r=8 q/v, seq 512, recompute per layer), ortq and the PyTorch+PEFT peer side by side:
#   1. synth (4-bit) + prepare with --check-placement on the 28-layer graph, and a check that
#      no training graph holds a control-flow op (Loop/If/Scan);
#   2. micro-batch 7 (MB_BIG) and 1: ortq bench and the peer, STEPS measured after 3 warm-up;
#   3. a summary of median step times and the ratios.
# Env: PRESET (llama-3.2-3b), STEPS (10), MBS ("7 1"), PREP_ARGS, BENCH_ARGS, SKIP_PEER=1.
# Prerequisites as for scripts/gpu-bench.sh.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; STEPS=${STEPS:-10}; MBS=${MBS:-7 1}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
log "start $(cat "$OUT/gpu.txt")"
timeout 150 $Q synth --preset $PRESET --quantize --out /tmp/k-m --quiet --force > "$OUT/synth.txt" 2>&1; log "synth rc $?"
timeout 300 $Q prepare --model /tmp/k-m/model.onnx --out /tmp/k-a --quiet --force --check-placement --device cuda ${PREP_ARGS:-} > "$OUT/placement.txt" 2>&1
log "prepare + check-placement rc $?: $(grep -c 'COMPUTE ON CPU' "$OUT/placement.txt") compute nodes on the CPU"
python3 - /tmp/k-a <<'PY' | tee -a "$OUT/progress.txt"
import onnx, sys, os, collections
for f in ("train.onnx", "train_recompute.onnx", "eval.onnx"):
    p = os.path.join(sys.argv[1], f)
    if not os.path.exists(p):
        continue
    m = onnx.load(p, load_external_data=False)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    cf = {k: v for k, v in ops.items() if k in ("Loop", "If", "Scan")}
    print(f"{f}: {len(m.graph.node)} nodes, control flow: {cf or 'none'}")
PY
for mb in $MBS; do
  timeout 240 $Q bench --artifacts /tmp/k-a --device cuda --micro-batch $mb --seq-len 512 --steps $STEPS --warmup 3 \
    --recompute layer --quiet ${BENCH_ARGS:-} --out "$OUT/ortq-mb$mb" > "$OUT/ortq-mb$mb.txt" 2>&1
  log "ortq mb$mb rc $?"
  if [ "${SKIP_PEER:-0}" != 1 ]; then
    timeout 200 python3 bench/peer/torch_peft.py --preset $PRESET --micro-batch $mb --seq-len 512 --steps $STEPS --warmup 3 \
      --recompute layer --out "$OUT/peer-mb$mb.json" > "$OUT/peer-mb$mb.txt" 2>&1
    log "peer mb$mb rc $?"
  fi
done
rm -f "$OUT"/*/*.png "$OUT"/*/*.svg
python3 - "$OUT" $MBS <<'PY' | tee -a "$OUT/progress.txt"
import json, sys, os
out = sys.argv[1]
for mb in sys.argv[2:]:
    row = {}
    f = os.path.join(out, f"ortq-mb{mb}", "report.json")
    if os.path.exists(f):
        p = json.load(open(f))["points"][0]
        row["ortq"] = (p["step_time"]["p50_ms"], p.get("peak_gpu_bytes", 0) / 2**30)
    f = os.path.join(out, f"peer-mb{mb}.json")
    if os.path.exists(f):
        d = json.load(open(f))
        p = d["points"][0] if "points" in d else d
        row["peer"] = (p["step_time"]["p50_ms"], p.get("peak_gpu_bytes", 0) / 2**30)
    s = "  ".join(f"{k} p50 {v[0]:.1f} ms, peak {v[1]:.2f} GiB" for k, v in row.items())
    if len(row) == 2:
        s += f"  → ortq is {row['peer'][0] / row['ortq'][0]:.2f}× the peer"
    print(f"micro-batch {mb}: {s}")
PY
