#!/usr/bin/env bash
# GPU machine, one call: the device-resident step (train.NewDeviceStepper) against the host
# step on the Llama-3.2-3B shape (4-bit, LoRA r=8 q/v, seq 512, recompute per layer), with the
# PyTorch+PEFT peer in the same call:
#   1. synth (4-bit) + prepare --check-placement (all four graphs) unless /tmp/k-a exists
#      (REUSE=1 keeps it from an earlier call on the same warm machine);
#   2. per micro-batch in MBS: `ortq bench --step X` for each X in STEPKINDS, and the peer;
#   3. a summary: median step, peak GPU (NVML), ONNX Runtime's arena, notes, ratios to the
#      peer, and the largest relative difference of each point's per-step losses from the
#      host step's (same batches, same dropout seeds).
# Env: PRESET (llama-3.2-3b), STEPS (17: 20 steps with the 3 warm-up), MBS ("7 1"),
#      STEPKINDS (host,device,graph), SKIP_PEER=1, REUSE=1, PREP_ARGS, BENCH_ARGS.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; STEPS=${STEPS:-17}; MBS=${MBS:-7 1}; STEPKINDS=${STEPKINDS:-host,device,graph}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
log "start $(cat "$OUT/gpu.txt")"
if [ "${REUSE:-0}" != 1 ] || [ ! -f /tmp/k-a/manifest.json ]; then
  timeout 200 $Q synth --preset $PRESET --quantize --out /tmp/k-m --quiet --force > "$OUT/synth.txt" 2>&1; log "synth rc $?"
  timeout 300 $Q prepare --model /tmp/k-m/model.onnx --out /tmp/k-a --quiet --force --check-placement --device cuda ${PREP_ARGS:-} > "$OUT/placement.txt" 2>&1
  log "prepare + check-placement rc $?: $(grep -c 'COMPUTE ON CPU' "$OUT/placement.txt") compute nodes on the CPU"
fi
for mb in $MBS; do
  for st in ${STEPKINDS//,/ }; do
    timeout 200 $Q bench --artifacts /tmp/k-a --device cuda --micro-batch $mb --seq-len 512 --steps $STEPS --warmup 3 \
      --recompute layer --step $st --quiet ${BENCH_ARGS:-} --out "$OUT/ortq-mb$mb-$st" > "$OUT/ortq-mb$mb-$st.txt" 2>&1
    log "ortq mb$mb $st rc $?"
  done
  if [ "${SKIP_PEER:-0}" != 1 ]; then
    timeout 200 python3 bench/peer/torch_peft.py --preset $PRESET --micro-batch $mb --seq-len 512 --steps $STEPS --warmup 3 \
      --recompute layer --out "$OUT/peer-mb$mb.json" > "$OUT/peer-mb$mb.txt" 2>&1
    log "peer mb$mb rc $?"
  fi
done
rm -f "$OUT"/*/*.png "$OUT"/*/*.svg "$OUT"/*/memory.jsonl
python3 - "$OUT" $MBS <<'PY' | tee -a "$OUT/progress.txt"
import json, sys, os
out = sys.argv[1]
G = 2**30
for mb in sys.argv[2:]:
    peer = None
    f = os.path.join(out, f"peer-mb{mb}.json")
    if os.path.exists(f):
        d = json.load(open(f))
        p = d["points"][0] if "points" in d else d
        peer = p["step_time"]["p50_ms"]
        print(f"mb{mb} peer: p50 {peer:.1f} ms, peak {p.get('peak_gpu_bytes', 0) / G:.2f} GiB")
    pts = []
    for d in sorted(os.listdir(out)):
        f = os.path.join(out, d, "report.json")
        if d.startswith(f"ortq-mb{mb}-") and os.path.exists(f):
            pts += json.load(open(f))["points"]
    host = next((p for p in pts if p["params"].get("step", "host") == "host"), None)
    for p in pts:
        st = p["params"].get("step", "host")
        a = p.get("ort_arena") or {}
        s = f"mb{mb} {st}: p50 {p['step_time']['p50_ms']:.1f} ms, peak {p.get('peak_gpu_bytes', 0) / G:.2f} GiB"
        s += f", arena peak {a.get('peak_in_use_bytes', 0) / G:.2f} / reserved {a.get('reserved_bytes', 0) / G:.2f} GiB"
        if peer:
            s += f", {peer / p['step_time']['p50_ms']:.2f}x the peer"
        if host and host is not p:
            d = max(abs(x - y) / abs(y) for x, y in zip(p["losses"], host["losses"]))
            s += f", losses vs host max rel {d:.2e} over {len(p['losses'])} steps (last {p['losses'][-1]:.5f} vs {host['losses'][-1]:.5f})"
        for n in p.get("notes") or []:
            s += f"\n    note: {n}"
        print(s)
PY
