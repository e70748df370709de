#!/usr/bin/env bash
# GPU machine, one call (issue 25 item 4): ortq's loss curve against PyTorch+PEFT's over the
# same STEPS optimizer steps of the default model, 16-bit base, LoRA dropout 0:
#   fp32: ortq on the CPU (exact float32) with --dump-batches; scripts/peft_loss_curve.py
#         replays the dump (same batches in the same order, ortq's lora_init, AdamW, warmup +
#         cosine schedule, token-weighted accumulation of GRAD_ACCUM micro-batches, clipping)
#         in float32 on the GPU (TF32 off).
#   fp16: the default model as a float16 Hugging Face checkpoint (peft_loss_curve.py
#         hf-checkpoint), imported (`ortq import --dtype float16`) and prepared by ortq,
#         trained on CUDA with loss scaling; replayed with
#         a float16 base, autocast and GradScaler (SKIP_FP16=1 leaves it out).
# Then `peft_loss_curve.py compare`: per-step largest relative loss difference, final eval
# perplexities, PASS/FAIL against the issue's bounds (0.5 % fp32, 2 % fp16, perplexity
# 0.5 %), curves.json and loss_curve.png into $OUT. Outputs (7): summary.txt, curves.json,
# loss_curve.png (loss_curve.csv without matplotlib), peft-fp32.json, peft-fp16.json,
# lc-fp32.txt, lc-fp16.txt (each variant's prepare/train/replay log).
# DATA: a text file (default: the demo corpus if carried, else the repository's Go sources,
# one document either way). Prerequisites as for scripts/gpu-bench.sh (~/ort, bin/ortq.xz);
# the Python side needs torch, transformers, peft, safetensors, onnx (matplotlib for the plot).
# DRY_RUN=1 (here, no GPU, no torch): ortq from bin/ortq (or $Q), .ort's library, 3 steps, the
# fp32 variant only, ortq's curve compared with itself — the shell and the compare step run.
set -u
cd "$(dirname "$0")/.."
if [ "${DRY_RUN:-0}" = 1 ]; then
  OUT=${OUT:-/tmp/lc-out}; mkdir -p "$OUT"; Q=${Q:-bin/ortq}; STEPS=${STEPS:-3}; SKIP_FP16=1
  export ORTQ_ORT_LIB=${ORTQ_ORT_LIB:-$PWD/.ort/libonnxruntime.so.1}
else
  . scripts/device-env.sh
fi
STEPS=${STEPS:-200}
GRAD_ACCUM=${GRAD_ACCUM:-2}
TRAIN_ARGS="--max-steps $STEPS --grad-accum $GRAD_ACCUM --micro-batch 7 --max-seq-len 512 --lr 1e-3 --schedule cosine --warmup-steps 20
  --max-grad-norm ${MAX_GRAD_NORM:-0.5} --seed 7 --save-every 0 --quiet --force"
DATA=${DATA:-.cache/demo/brown-learned.txt}
if [ ! -s "$DATA" ]; then DATA=/tmp/lc-data.txt; find . -name '*.go' -not -path './.*' -print0 | sort -z | xargs -0 cat > "$DATA"; fi
PY=scripts/peft_loss_curve.py
W=/tmp/lc; rm -rf "$W"; mkdir -p "$W"
echo "data: $DATA ($(wc -c < "$DATA") bytes); train: $TRAIN_ARGS" | tr -s ' \n' ' ' > "$OUT/summary.txt"; echo >> "$OUT/summary.txt"

# fp32: ortq on the CPU, the reference on the GPU (or the CPU where torch sees none).
L="$OUT/lc-fp32.txt"
$Q prepare --model default --out $W/a32 --bits 16 --lora-dropout 0 --force --quiet >> "$L" 2>&1 || { echo "prepare fp32 failed"; cat "$L"; exit 1; }
# shellcheck disable=SC2086
timeout 240 $Q train --artifacts $W/a32 --data "$DATA" --tokenizer default --device cpu $TRAIN_ARGS --out $W/r32 \
  --dump-batches $W/d32.jsonl >> "$L" 2>&1
echo "ortq fp32 (cpu) train rc $?" | tee -a "$OUT/summary.txt"
# Where prepare extracted the embedded default model (model.onnx, config.json): the reference reads the same file.
MODEL_DIR=$(python3 -c 'import json,os,sys; print(os.path.dirname(json.load(open(sys.argv[1]))["options"]["model"]))' $W/a32/manifest.json)
PAIRS=(--ortq $W/d32.jsonl --label "fp32 (ortq CPU)")
if [ "${DRY_RUN:-0}" = 1 ]; then
  python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' $PY && echo "$PY parses" >> "$L"
  PAIRS+=(--peft $W/d32.jsonl)
else
  DEV=$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
  timeout 150 python3 $PY replay --dump $W/d32.jsonl --artifacts $W/a32 --model-dir "$MODEL_DIR" --device "$DEV" \
    --out "$OUT/peft-fp32.json" >> "$L" 2>&1
  echo "PyTorch+PEFT fp32 ($DEV) replay rc $?" | tee -a "$OUT/summary.txt"
  PAIRS+=(--peft "$OUT/peft-fp32.json")
fi

# The fp32 verdict first, so that it is there even if the fp16 part runs out of time.
python3 $PY compare "${PAIRS[@]}" --out "$OUT" 2>&1 | tee -a "$OUT/summary.txt"

# fp16: the same weights as a float16 checkpoint; ortq on CUDA with loss scaling.
if [ "${SKIP_FP16:-0}" != 1 ]; then
  L="$OUT/lc-fp16.txt"
  # prepare imports a checkpoint directory in float32; `ortq import --dtype float16` keeps float16.
  python3 $PY hf-checkpoint --model-dir "$MODEL_DIR" --out $W/hf16 --dtype float16 >> "$L" 2>&1 &&
    $Q import --hf $W/hf16 --out $W/m16 --dtype float16 --force --quiet >> "$L" 2>&1 &&
    $Q prepare --model $W/m16/model.onnx --out $W/a16 --bits 16 --lora-dropout 0 --force --quiet >> "$L" 2>&1
  echo "fp16 checkpoint + import + prepare rc $?" | tee -a "$OUT/summary.txt"
  python3 -c 'import json,sys; print("artifacts precision:", json.load(open(sys.argv[1]))["model"]["precision"])' $W/a16/manifest.json >> "$L" 2>&1
  # shellcheck disable=SC2086
  timeout 120 $Q train --artifacts $W/a16 --data "$DATA" --tokenizer default --device cuda $TRAIN_ARGS --out $W/r16 \
    --dump-batches $W/d16.jsonl >> "$L" 2>&1
  echo "ortq fp16 (cuda) train rc $?" | tee -a "$OUT/summary.txt"
  timeout 120 python3 $PY replay --dump $W/d16.jsonl --artifacts $W/a16 --model-dir "$MODEL_DIR" --dtype float16 --device cuda \
    --out "$OUT/peft-fp16.json" >> "$L" 2>&1
  rc=$?
  echo "PyTorch+PEFT fp16 (cuda) replay rc $rc" | tee -a "$OUT/summary.txt"
  if [ $rc = 0 ]; then
    PAIRS+=(--ortq $W/d16.jsonl --label "fp16 + loss scaling (ortq CUDA)" --peft "$OUT/peft-fp16.json")
    python3 $PY compare "${PAIRS[@]}" --out "$OUT" 2>&1 | tee -a "$OUT/summary.txt"
  fi
fi
grep -h "eval:" "$OUT"/lc-fp*.txt | tee -a "$OUT/summary.txt"
