#!/usr/bin/env bash
# GPU machine, one call: issue 25's step-time and memory criterion at the seed's settings —
# the Llama-3.2-3B shape, micro-batch 7 × 512, recompute per layer, graph step — for an NF4 +
# double-quantized base (block 64) against int4 (block 32), each read as 4-bit (--base 4bit;
# NF4 with --dequantize-forward, so that its step is captured) and dense (--base dense: the
# 4-bit weights dequantized once when the session is created, NF4 since passes.DenseBase
# folds its chains), interleaved A B A B. BNB4K=1 adds NF4 prepared with --bnb4-kernel too
# (its dequantizations as ai.ortq.DequantBnb4), read as 4-bit in each round. Env: MB (7),
# STEPS (10), OUT, BNB4K, PHASE (prep: synth and prepare only; measure: the benches only;
# default both).
set -u
. "$(dirname "$0")/device-env.sh"
MB=${MB:-7}; STEPS=${STEPS:-10}
NF4="--quant nf4 --double-quant --block-size 64"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/summary.txt"; }
if [ "${PHASE:-}" != measure ]; then
  # the two bases side by side (synth and prepare are mostly single-threaded)
  ( timeout 150 $Q synth --preset llama-3.2-3b --quantize --out /tmp/g-int4 --quiet --force > /dev/null 2>&1; log "synth int4 rc $?"
    timeout 150 $Q prepare --model /tmp/g-int4/model.onnx --out /tmp/g-a-int4 --quiet --force > "$OUT/prepare-int4.txt" 2>&1; log "prepare int4 rc $?" ) &
  # shellcheck disable=SC2086
  ( timeout 150 $Q synth --preset llama-3.2-3b --quantize $NF4 --out /tmp/g-nf4 --quiet --force > /dev/null 2>&1; log "synth nf4 rc $?"
    timeout 150 $Q prepare --model /tmp/g-nf4/model.onnx --out /tmp/g-a-nf4 --quiet --force $NF4 --dequantize-forward > "$OUT/prepare-nf4.txt" 2>&1
    log "prepare nf4 --dequantize-forward rc $?"
    if [ "${BNB4K:-0}" = 1 ]; then
      timeout 150 $Q prepare --model /tmp/g-nf4/model.onnx --out /tmp/g-a-nf4k --quiet --force $NF4 --dequantize-forward --bnb4-kernel \
        > "$OUT/prepare-nf4k.txt" 2>&1
      log "prepare nf4 --dequantize-forward --bnb4-kernel rc $?"
    fi ) &
  wait
fi
[ "${PHASE:-}" = prep ] && exit 0
point() { # name artifacts base
  timeout 150 $Q bench --artifacts $2 --device cuda --micro-batch $MB --seq-len 512 --steps $STEPS --warmup 3 \
    --recompute layer --base $3 --step graph --quiet --out /tmp/g-b-$1 > /tmp/g-b-$1.txt 2>&1
  log "$1 rc $?: $(python3 "$(dirname "$0")/point.py" /tmp/g-b-$1/report.json 2>&1 | tail -1)"
  cp /tmp/g-b-$1/report.json "$OUT/bench-$1.json" 2>/dev/null
}
point int4-4bit /tmp/g-a-int4 4bit
point nf4-4bit /tmp/g-a-nf4 4bit
[ "${BNB4K:-0}" = 1 ] && point nf4k-4bit /tmp/g-a-nf4k 4bit
point int4-dense /tmp/g-a-int4 dense
point nf4-dense /tmp/g-a-nf4 dense
point int4-4bit-2 /tmp/g-a-int4 4bit
point nf4-4bit-2 /tmp/g-a-nf4 4bit
[ "${BNB4K:-0}" = 1 ] && point nf4k-4bit-2 /tmp/g-a-nf4k 4bit
point int4-dense-2 /tmp/g-a-int4 dense
point nf4-dense-2 /tmp/g-a-nf4 dense
