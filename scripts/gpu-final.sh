#!/usr/bin/env bash
# Final issue-3 measurement on the GPU machine (same prerequisites as gpu-bench.sh): the
# Llama-3.2-3B-shaped model as `ortq synth` writes it (SYNTH_ARGS, default --quantize: the 4-bit
# bytes prepare would make, so prepare skips quantizing; e.g. "--quantize --ops fused"), 4-bit,
# and the PyTorch+PEFT peer beside it in the same run, most important first. Each point
# writes its own report.
set -u
. "$(dirname "$0")/device-env.sh"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
log start
timeout 120 $Q synth --preset llama-3.2-3b --out /tmp/m3b --quiet --force ${SYNTH_ARGS:---quantize} > "$OUT/synth.txt" 2>&1; log "synth rc $?"
timeout 240 $Q prepare --model /tmp/m3b/model.onnx --out /tmp/a3b --quiet --force > "$OUT/prepare.txt" 2>&1; log "prepare rc $?"
point() { # name args...
  local name=$1; shift
  timeout 120 $Q bench --artifacts /tmp/a3b --device cuda --seq-len 512 --quiet --out "$OUT/$name" "$@" > "$OUT/$name.txt" 2>&1
  log "$name rc $?: $(grep '^| ortq' "$OUT/$name/report.md" 2>/dev/null | head -1)"
}
point mb7-layer --micro-batch 7 --steps 8 --warmup 3 --recompute layer
timeout 120 python3 bench/peer/torch_peft.py --micro-batch 7 --seq-len 512 --recompute layer --out "$OUT/peer-mb7.json" > "$OUT/peer-mb7.txt" 2>&1
log "peer layer rc $?: $(tail -1 "$OUT/peer-mb7.txt")"
timeout 60 $Q synth --preset llama-3.2-3b --layers 2 --out /tmp/m2 --quiet --force ${SYNTH_ARGS:---quantize} > /dev/null 2>&1
timeout 90 $Q prepare --model /tmp/m2/model.onnx --out /tmp/a2 --quiet --force --check-placement --device cuda > "$OUT/placement.txt" 2>&1
log "placement rc $?"
point mb1-layer --micro-batch 1 --steps 6 --warmup 2 --recompute layer
point mb7-none --micro-batch 7 --steps 4 --warmup 2 --recompute none
point mb14-layer --micro-batch 14 --steps 4 --warmup 2 --recompute layer
timeout 120 python3 bench/peer/torch_peft.py --micro-batch 7 --seq-len 512 --recompute none --out "$OUT/peer-mb7-none.json" > "$OUT/peer-mb7-none.txt" 2>&1
log "peer none rc $?: $(tail -1 "$OUT/peer-mb7-none.txt")"
point mb7-layer-peer --micro-batch 7 --steps 4 --warmup 2 --recompute layer --peer "$OUT/peer-mb7.json" --peer "$OUT/peer-mb7-none.json"
log done
