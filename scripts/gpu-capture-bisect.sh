#!/usr/bin/env bash
# GPU machine, one call: which part of the training graph keeps ONNX Runtime from capturing
# the device step in a CUDA graph. A 2-layer Llama-3.2-3B-shape model is prepared in variants
# (VARIANTS: prepare flags per variant, separated by ';') and `ortq bench --step graph` runs a
# few micro-batch-1 steps on each; the summary gives each variant's exit status and error.
# VERBOSE_VARIANT=N logs variant N's run with ONNX Runtime's verbose log (excerpt kept).
set -u
. "$(dirname "$0")/device-env.sh"
VARIANTS=${VARIANTS:-"default;--bits 16;--lora-dropout 0;--loss-chunks 0;--bits 16 --lora-dropout 0 --loss-chunks 0"}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
timeout 120 $Q synth --preset llama-3.2-3b --layers 2 --quantize --out /tmp/b-m --quiet --force > "$OUT/synth.txt" 2>&1; log "synth rc $?"
i=0
IFS=';' read -ra VS <<< "$VARIANTS"
for v in "${VS[@]}"; do
  i=$((i+1)); args=$v; [ "$v" = default ] && args=""
  timeout 120 $Q prepare --model /tmp/b-m/model.onnx --out /tmp/b-a$i --quiet --force $args > "$OUT/prep$i.txt" 2>&1 || { log "variant $i ($v): prepare failed"; continue; }
  verbose=0; [ "${VERBOSE_VARIANT:-0}" = $i ] && verbose=1
  ORTQX_ORT_VERBOSE=$verbose timeout 120 $Q bench --artifacts /tmp/b-a$i --device cuda --micro-batch 1 --seq-len 128 --steps 3 --warmup 2 \
    --recompute layer --step graph --quiet --out /tmp/b-o$i > /tmp/bench$i.log 2>&1
  rc=$?
  if [ $verbose = 1 ]; then
    grep -v "^$" /tmp/bench$i.log | grep -i -n "graph\|captur\|memcpy\|copy\|error\|fail" | tail -60 > "$OUT/verbose$i.txt"
    tail -40 /tmp/bench$i.log >> "$OUT/verbose$i.txt"
  fi
  tail -c 3000 /tmp/bench$i.log > "$OUT/bench$i.txt"
  log "variant $i ($v): bench --step graph rc $rc: $(grep -o 'CUDA failure [0-9]*: [^;]*' "$OUT/bench$i.txt" | head -1)$(grep -o 'note: .*' "$OUT/bench$i.txt" | head -1)"
done
