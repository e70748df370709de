#!/usr/bin/env bash
# GPU machine, one call: issue 24's decode figures after the device argmax became a chunked
# ArgMax (generate/pick.go), most important first; summary.txt is written as it goes.
#   1. Llama-3.2-3B shape (random weights, int4, fp16), LoRA q,v: `ortq bench generate`
#      (128-token prompt, 256 new tokens, CUDA graph) at batch 1 and 8 of the fused shared
#      export, then batch 1 of the fused --format onnx-adapter export and of the --merge
#      export (issue 24: within ±5 % of the plain export); batch 1 of the plain export again after 3;
#   2. issue 25: an NF4 + double-quantized base (block 64) with --dequantize-forward (no
#      MatMulBnb4 in the device step, so it is captured) trains 20 steps of the default model
#      on CUDA as on the CPU (gpu-cuda-vs-cpu.sh);
#   3. issue 25: the training step of the 3B shape cut to NF4_LAYERS (8) layers, micro-batch 7: int4 (CUDA
#      graph) against NF4 + double quant (MatMulBnb4, uncaptured) and NF4 + double quant
#      --dequantize-forward (captured), `ortq bench --recompute layer --base 4bit`;
#   4. CUDA graph vs uncaptured greedy ids, each twice, on a trained model: the embedded default
#      model as a float16 checkpoint (scripts/peft_loss_curve.py hf-checkpoint), imported,
#      prepared 4-bit, exported shared (random weights' near-ties make the 3B ids a poor check);
#   5. ORT_FPA_INTB_GEMM=1 (ONNX Runtime's fpA_intB GEMM for MatMulNBits) at batch 8 and 1;
#   6. the Llama-3.1-8B shape at batch 1 (issue 24: ≥ 150 tokens/s), if time is left (LEFT8B s).
# Env: OUT, LEFT8B (default 260). Prerequisites as for scripts/gpu-generate2.sh.
set -u
. "$(dirname "$0")/device-env.sh"
W=/tmp/d3; S="$OUT/summary.txt"; LOG="$OUT/log.txt"; T0=$(date +%s)
say() { echo "[$(date +%T)] $*" | tee -a "$S"; }
run() { echo "+ $*" >> "$LOG"; "$@" >> "$LOG" 2>&1; }
mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$S" 2>&1
bg() { local name=$1; shift; run timeout 200 $Q bench generate --device cuda --prompt-tokens 128 --new-tokens 256 --warmup 1 --runs 3 --quiet --out $W/b-$name "$@"
  say "bench $name rc $?: $(grep -h '^| ortq ' $W/b-$name/report.md 2>/dev/null)"; cp $W/b-$name/report.json "$OUT/bench-$name.json" 2>/dev/null; }
run timeout 300 $Q synth --preset llama-3.2-3b --dtype float16 --quantize --out $W/m --quiet --force; say "synth 3B rc $?"
run timeout 300 $Q prepare --model $W/m/model.onnx --out $W/a --quiet --force; say "prepare 3B rc $?"
ex() { run timeout 300 $Q export --artifacts $W/a --adapter $W/a/lora_init.safetensors --tokenizer default --kv-cache shared --out $W/e-$1 --force "${@:2}"
  say "export $1 rc $?: $(grep -h 'fused\|note' "$LOG" | tail -2 | tr '\n' ' ')"; }
ex plain; ex adapter --format onnx-adapter; ex merged --merge
bg b1 --model $W/e-plain --batch 1
bg b8 --model $W/e-plain --batch 8
bg b1-onnx-adapter --model $W/e-adapter --batch 1
bg b1-merged --model $W/e-merged --batch 1
# 2. NF4 CUDA vs CPU.
PREPARE_FLAGS="--quant nf4 --double-quant --block-size 64 --dequantize-forward" OUT=$W bash scripts/gpu-cuda-vs-cpu.sh > $W/cvc.txt 2>&1
grep -h "CUDA vs CPU\|PASS\|FAIL\|cpu :\|cuda:" $W/cvc.txt | tee -a "$S"; grep -h "optimizer step\|CUDA graphs off" $W/cvc-cuda.txt | tee -a "$S"
cp $W/cvc*.txt "$OUT/" 2>/dev/null
# 3. NF4 + double quant against int4, the 3B shape cut to 8 layers, micro-batch 7.
tb() { run timeout 150 $Q bench --artifacts $2 --device cuda --micro-batch 7 --seq-len 512 --steps 10 --warmup 3 --recompute layer --base 4bit --step graph --quiet --out $W/t-$1
  say "train bench $1 rc $?: $(python3 "$(dirname "$0")/point.py" $W/t-$1/report.json --notes 2>&1 | tail -1)"; }
NF4="--quant nf4 --double-quant --block-size 64"
run timeout 100 $Q synth --preset llama-3.2-3b --layers ${NF4_LAYERS:-8} --quantize --out $W/m8i --quiet --force
run timeout 100 $Q prepare --model $W/m8i/model.onnx --out $W/a8i --quiet --force; say "8-layer int4 rc $?"
# shellcheck disable=SC2086
run timeout 100 $Q synth --preset llama-3.2-3b --layers ${NF4_LAYERS:-8} --quantize $NF4 --out $W/m8n --quiet --force
# shellcheck disable=SC2086
run timeout 100 $Q prepare --model $W/m8n/model.onnx --out $W/a8n --quiet --force $NF4; say "8-layer nf4-dq rc $?"
# shellcheck disable=SC2086
run timeout 100 $Q prepare --model $W/m8n/model.onnx --out $W/a8f --quiet --force $NF4 --dequantize-forward; say "8-layer nf4-dq --dequantize-forward rc $?"
tb int4 $W/a8i; tb nf4-dq-fwd $W/a8f; tb nf4-dq $W/a8n; tb int4-again $W/a8i
bg b1-again --model $W/e-plain --batch 1
# 4. CUDA graph vs uncaptured on a trained model.
PY=scripts/peft_loss_curve.py
run $Q prepare --model default --out $W/a32 --bits 16 --force --quiet
MODEL_DIR=$(python3 -c 'import json,os,sys; print(os.path.dirname(json.load(open(sys.argv[1]))["options"]["model"]))' $W/a32/manifest.json)
run python3 $PY hf-checkpoint --model-dir "$MODEL_DIR" --out $W/hf16 --dtype float16 && run $Q import --hf $W/hf16 --out $W/m16 --dtype float16 --force --quiet &&
  run $Q prepare --model $W/m16/model.onnx --out $W/a16 --force --quiet &&
  run $Q export --artifacts $W/a16 --adapter $W/a16/lora_init.safetensors --tokenizer default --kv-cache shared --out $W/e16 --force --quiet
say "default model fp16 → shared export rc $?"
PROMPT="the history of science is the study of the development of science and scientific knowledge"
for r in graph plain graph2 plain2; do
  g=true; [ "${r#plain}" != "$r" ] && g=false
  timeout 60 $Q generate --model $W/e16 --prompt "$PROMPT" --device cuda --max-new-tokens 128 --ignore-eos --ids --cuda-graph=$g > $W/ids-$r.json 2> $W/$r.err
  say "generate default-fp16 $r rc $?: $(tail -1 $W/$r.err)"
done
python3 - $W <<'P' | tee -a "$S"
import json, sys
w = sys.argv[1]
ids = {r: json.load(open(f"{w}/ids-{r}.json")) for r in ("graph", "plain", "graph2", "plain2")}
for a, b in (("graph", "plain"), ("graph2", "plain2"), ("graph", "graph2"), ("plain", "plain2")):
    x, y = ids[a], ids[b]
    n = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), None)
    print(f"CHECK default-fp16 {a} vs {b}:", f"EQUAL ({len(x)} tokens)" if n is None and len(x) == len(y) else f"DIFFER at new token {n}")
P
# 5. fpA_intB.
ORT_FPA_INTB_GEMM=1 bg b8-fpa --model $W/e-plain --batch 8
ORT_FPA_INTB_GEMM=1 bg b1-fpa --model $W/e-plain --batch 1
# 6. 8B.
left=$(( ${BUDGET:-560} - ($(date +%s) - T0) ))
if [ "$left" -lt "${LEFT8B:-260}" ]; then say "8B skipped: $left s left"; exit 0; fi
rm -rf $W/m $W/a $W/e-* $W/b-*
W=$W/8b bash "$(dirname "$0")/gpu-decode8b.sh"
say done
