#!/usr/bin/env bash
# GPU machine: issue 24's 8B figure — the Llama-3.1-8B shape (random weights, int4, fp16),
# LoRA q,v, fused shared export, `ortq bench generate` at batch 1 (128-token prompt, 256 new
# tokens, CUDA graph; target ≥ 150 tokens/s). gpu-decode3.sh runs it last when time is left.
# Env: OUT, W (work folder, default /tmp/d8), PHASE (prep: synth, prepare and export only;
# measure: the bench only; default both).
set -u
. "$(dirname "$0")/device-env.sh"
W=${W:-/tmp/d8}; S="$OUT/summary.txt"; LOG="$OUT/log8b.txt"
say() { echo "[$(date +%T)] $*" | tee -a "$S"; }
run() { echo "+ $*" >> "$LOG"; "$@" >> "$LOG" 2>&1; }
mkdir -p $W
if [ "${PHASE:-}" != measure ]; then
run timeout 200 $Q synth --preset llama-3.1-8b --dtype float16 --quantize --out $W/m8 --quiet --force; say "synth 8B rc $?"
run timeout 300 $Q prepare --model $W/m8/model.onnx --out $W/a8 --quiet --force; say "prepare 8B rc $?"
run timeout 200 $Q export --artifacts $W/a8 --adapter $W/a8/lora_init.safetensors --tokenizer default --kv-cache shared --out $W/e8 --force --quiet; say "export 8B rc $?"
fi
[ "${PHASE:-}" = prep ] && exit 0
run timeout 200 $Q bench generate --device cuda --prompt-tokens 128 --new-tokens 256 --warmup 1 --runs 3 --quiet --out $W/b-8b-b1 --model $W/e8 --batch 1
say "bench 8b-b1 rc $?: $(grep -h '^| ortq ' $W/b-8b-b1/report.md 2>/dev/null)"; cp $W/b-8b-b1/report.json "$OUT/bench-8b-b1.json" 2>/dev/null
