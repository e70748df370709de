#!/usr/bin/env bash
# The issue-3 benchmark on the GPU machine, in one call, most important first:
#   1. placement check on a 2-layer model of the same shape (same ops, quick)
#   2. ortq on Llama-3.2-3B shape (28 layers), 4-bit, micro-batch 7 x 512, recompute per layer
#   3. the PyTorch+PEFT peer on the same GPU, same workload
#   4. ortq rows: recompute none, micro-batch 1 and 14, 16-bit base
# Prerequisites: ~/ort holds ONNX Runtime 1.29 + CUDA provider (the `make ort-gpu-bundle` bundle, unpacked),
# bin/ortq.xz is the ortq binary (built with Go elsewhere; there is no Go on the GPU machine).
set -u
. "$(dirname "$0")/device-env.sh"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
log "start"
if [ "${SKIP_PLACEMENT:-0}" != 1 ]; then
  timeout 60 $Q synth --preset llama-3.2-3b --layers 2 --out /tmp/m2 --quiet --force > /dev/null 2>&1
  timeout 120 $Q prepare --model /tmp/m2/model.onnx --out /tmp/a2 --quiet --force --check-placement --device cuda > "$OUT/placement.txt" 2>&1
  log "placement rc $?"
fi
timeout 120 $Q synth --preset llama-3.2-3b --out /tmp/m3b --quiet --force ${SYNTH_ARGS:-} > "$OUT/synth.txt" 2>&1; log "synth rc $?"
timeout 240 $Q prepare --model /tmp/m3b/model.onnx --out /tmp/a3b --quiet --force > "$OUT/prepare.txt" 2>&1; log "prepare rc $?"
du -sh /tmp/a3b/* >> "$OUT/prepare.txt"
if [ "${SKIP_MB7:-0}" != 1 ]; then
timeout 200 $Q bench --artifacts /tmp/a3b --device cuda --micro-batch 7 --seq-len 512 --steps 8 --warmup 3 --recompute layer --quiet --out "$OUT/ortq-mb7" > "$OUT/ortq-mb7.txt" 2>&1
log "ortq mb7 rc $?"
fi
timeout 150 python3 bench/peer/torch_peft.py --micro-batch 7 --seq-len 512 --recompute layer --out "$OUT/peer-mb7.json" > "$OUT/peer-mb7.txt" 2>&1
log "peer mb7 rc $?"
timeout 240 $Q bench --artifacts /tmp/a3b --device cuda --seq-len 512 --steps 6 --warmup 2 --sweep micro-batch=1,7,14 --sweep recompute=none,layer \
  --peer "$OUT/peer-mb7.json" --quiet --out "$OUT/ortq-sweep" > "$OUT/ortq-sweep.txt" 2>&1
log "ortq sweep rc $?"
timeout 150 python3 bench/peer/torch_peft.py --micro-batch 7 --seq-len 512 --recompute none --out "$OUT/peer-mb7-none.json" > "$OUT/peer-mb7-none.txt" 2>&1
log "peer none rc $?"
[ "${SKIP_BITS16:-0}" = 1 ] || timeout 240 $Q bench --model /tmp/m3b/model.onnx --bits 16 --device cuda --micro-batch 7 --seq-len 512 --steps 6 --warmup 2 --recompute layer \
  --quiet --out "$OUT/ortq-bits16" > "$OUT/ortq-bits16.txt" 2>&1
log "ortq bits16 rc $?"
