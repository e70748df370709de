#!/usr/bin/env bash
# GPU machine, one call: the device step's forward products of 4-bit Linears as MatMulNBits
# (DequantizeLinear kept for dx; prepare's default) against prepare --dequantize-forward, on one
# synthesized model (PRESET, default llama-3.2-3b), micro-batch MB (7), `ortq bench --step
# graph`:
#   dequantize       --dequantize-forward: DequantizeLinear everywhere;
#   nbits            the default, the 4-bit weights shared by both forms (one buffer);
#   nbits-unshared   the default with ORTQX_SHARE_WEIGHTS=0 (ONNX Runtime loads both);
# then the peer once. Prints p50, peak, the memory breakdown and the notes (which say whether
# the weights were shared). Env: PRESET, MB, STEPS (10), OUT.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; MB=${MB:-7}; STEPS=${STEPS:-10}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/summary.txt"; }
timeout 200 $Q synth --preset $PRESET --quantize --out /tmp/n-m --quiet --force > /dev/null 2>&1; log "synth rc $?"
timeout 200 $Q prepare --model /tmp/n-m/model.onnx --out /tmp/n-a0 --quiet --force --dequantize-forward > /dev/null 2>&1; log "prepare --dequantize-forward rc $?"
timeout 200 $Q prepare --model /tmp/n-m/model.onnx --out /tmp/n-a1 --quiet --force > /dev/null 2>&1; log "prepare rc $?"
point() { # name artifacts [env]
  env ${3:-} timeout 150 $Q bench --artifacts $2 --device cuda --micro-batch $MB --seq-len 512 --steps $STEPS --warmup 3 \
    --recompute layer --step graph --quiet --out /tmp/n-b-$1 > /tmp/n-b-$1.txt 2>&1
  log "$1 rc $?: $(python3 "$(dirname "$0")/point.py" /tmp/n-b-$1/report.json --memory --notes 2>&1 | tail -1)"
}
point dequantize /tmp/n-a0
point nbits /tmp/n-a1
point nbits-unshared /tmp/n-a1 ORTQX_SHARE_WEIGHTS=0
timeout 200 python3 bench/peer/torch_peft.py --preset $PRESET --micro-batch $MB --seq-len 512 --steps 17 --warmup 3 \
  --recompute layer --out /tmp/n-peer.json > /dev/null 2>&1
log "peer: $(python3 "$(dirname "$0")/point.py" /tmp/n-peer.json 2>&1 | tail -1)"
