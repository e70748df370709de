#!/usr/bin/env bash
# GPU machine, one call: an NF4 + double-quantized base (bitsandbytes' layout, block 64, the
# seed recipe's) against ortq's int4 (block 32) on one synthesized model (PRESET, default
# llama-3.2-3b), micro-batch MB (7), `ortq bench --step graph --recompute layer`, A/B/A/B in
# one call: step p50, peak GPU memory and the notes of each point; `prepare --check-placement
# --device cuda` of the NF4 artifacts; then (unless SKIP_CVC=1) CUDA against CPU losses over 20
# steps of the default model with the same NF4 flags (scripts/gpu-cuda-vs-cpu.sh).
# Both bases are read as 4-bit (--base 4bit; gpu-nf4b.sh compares the dense bases too). Env: PRESET, MB,
# STEPS (10), AGAIN (1: the A/B again), OUT. Prerequisites as for scripts/gpu-bench.sh.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; MB=${MB:-7}; STEPS=${STEPS:-10}
NF4="--quant nf4 --double-quant --block-size 64"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/summary.txt"; }
timeout 200 $Q synth --preset $PRESET --quantize --out /tmp/f-int4 --quiet --force > /dev/null 2>&1; log "synth int4 rc $?"
# shellcheck disable=SC2086
timeout 200 $Q synth --preset $PRESET --quantize $NF4 --out /tmp/f-nf4 --quiet --force > /dev/null 2>&1; log "synth nf4 rc $?"
timeout 200 $Q prepare --model /tmp/f-int4/model.onnx --out /tmp/f-a-int4 --quiet --force > /dev/null 2>&1; log "prepare int4 rc $?"
# shellcheck disable=SC2086
timeout 200 $Q prepare --model /tmp/f-nf4/model.onnx --out /tmp/f-a-nf4 --quiet --force $NF4 --check-placement --device cuda > "$OUT/nf4-prepare.txt" 2>&1
log "prepare nf4 --check-placement rc $?: $(tail -3 "$OUT/nf4-prepare.txt" | tr '\n' ' ')"
point() { # name artifacts
  timeout 150 $Q bench --artifacts $2 --device cuda --micro-batch $MB --seq-len 512 --steps $STEPS --warmup 3 \
    --recompute layer --base 4bit --step graph --quiet --out /tmp/f-b-$1 > /tmp/f-b-$1.txt 2>&1
  log "$1 rc $?: $(python3 "$(dirname "$0")/point.py" /tmp/f-b-$1/report.json --memory --notes 2>&1 | tail -1)"
}
point int4 /tmp/f-a-int4
point nf4-dq /tmp/f-a-nf4
if [ "${AGAIN:-1}" = 1 ]; then
  point int4-again /tmp/f-a-int4
  point nf4-dq-again /tmp/f-a-nf4
fi
if [ "${SKIP_CVC:-0}" != 1 ]; then
  PREPARE_FLAGS="$NF4" bash "$(dirname "$0")/gpu-cuda-vs-cpu.sh" 2>&1 | tee -a "$OUT/summary.txt"
fi
