#!/usr/bin/env bash
# GPU machine, one call: where the time of `ortq generate` goes (issue 24), by kernel, with
# Nsight Compute. Synthesizes the Llama-3.2-3B shape (LAYERS, default 28; int4, fp16),
# prepares it, exports it with --kv-cache shared and the LoRA as separate MatMuls, then runs
# `ortq generate --cuda-graph=false` under ncu on a 128-token prompt with NEW (4) new tokens:
# the CSV holds the prefill's kernels, then each decode step's. ncu-kernels.py prints the
# categories; the split into prefill and decode steps is left to the CSV (kernel order).
# Env: LAYERS, NEW, OUT. Prerequisites as for scripts/gpu-generate2.sh.
set -u
. "$(dirname "$0")/device-env.sh"
L=${LAYERS:-28}; NEW=${NEW:-4}; W=/tmp/pd
NCUK=../shared/device/ncu-kernels.py
[ -f "$NCUK" ] || NCUK=$(dirname "$0")/ncu-kernels.py
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/decode-progress.txt"; }
mkdir -p $W
timeout 300 $Q synth --preset llama-3.2-3b --layers "$L" --dtype float16 --quantize --out $W/m --quiet --force > /dev/null 2>&1; log "synth rc $?"
timeout 300 $Q prepare --model $W/m/model.onnx --out $W/a --quiet --force > /dev/null 2>&1; log "prepare rc $?"
timeout 300 $Q export --artifacts $W/a --adapter $W/a/lora_init.safetensors --tokenizer default --out $W/e --force --quiet --kv-cache shared > "$OUT/decode-export.txt" 2>&1; log "export rc $?"
PROMPT=$(python3 -c 'print(" ".join(["the study of language and of the history of science"] * 12))')
timeout 400 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --log-file "$OUT/decode.csv" \
  $Q generate --model $W/e --prompt "$PROMPT" --device cuda --max-new-tokens "$NEW" --ignore-eos --ids --cuda-graph=false > $W/ncu.txt 2>&1
log "ncu generate rc $?: $(tail -2 $W/ncu.txt | tr '\n' ' ')"
python3 "$NCUK" "$OUT/decode.csv" > "$OUT/decode-kernels.txt" 2>&1; head -40 "$OUT/decode-kernels.txt"
gzip -f "$OUT/decode.csv"
