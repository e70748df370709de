#!/usr/bin/env bash
# Decode speed of ortq generate beside transformers' generate (issue 14), on the GPU machine
# (no Go there: the prebuilt bin/ortq.xz). The Llama-3.2-3B shape with random weights:
# ortq synth --dtype float16 --quantize (int4 base, fp16 activations) → prepare (LoRA q_proj,v_proj r 8) → export with the
# LoRA as separate MatMuls → generate on CUDA, batch 1, a 128-token prompt, 256 new tokens,
# EOS ignored, printing ids (--ids: the model's vocabulary, 128256, is larger than the default
# tokenizer's 3072, so its ids have no text; they are kept in $OUT/ortq_ids_N.json); then
# scripts/hf_generate_bench.py times transformers' generate (fp16, SDPA, same shape, random
# weights, same prompt and length) in the same call. Usage:
#   LAYERS=28 bash scripts/gpu-generate.sh        # results in $OUT/generate.txt
set -u
. "$(dirname "$0")/device-env.sh"
L=${LAYERS:-28}; NEW=${NEW:-256}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 300 $Q synth --preset llama-3.2-3b --layers "$L" --dtype float16 --quantize --out /tmp/g/m --quiet --force 2>&1 | tail -2
timeout 600 $Q prepare --model /tmp/g/m/model.onnx --out /tmp/g/a --quiet --force > "$OUT/prepare.txt" 2>&1
timeout 600 $Q export --artifacts /tmp/g/a --adapter /tmp/g/a/lora_init.safetensors --tokenizer default \
  --out /tmp/g/e --force --quiet > "$OUT/export.txt" 2>&1
# About 128 tokens of text (the default tokenizer's first 128 ids of a repeated sentence,
# decoded; ids are valid for any larger vocabulary); generate prints the exact count.
PROMPT=$(Q=$Q python3 - <<'P'
import json, os, subprocess
q = os.environ["Q"]
text = " ".join(["the study of language and of the history of science"] * 30)
run = lambda args, inp: subprocess.run([q, "tokenize", "--tokenizer", "default"] + args, input=inp, capture_output=True, text=True).stdout.splitlines()[0]
ids = json.loads(run([], text))[:128]
print(json.loads(run(["--decode"], json.dumps(ids))))
P
)
for i in 1 2; do  # the first run includes CUDA start-up
  timeout 600 $Q generate --model /tmp/g/e --prompt "$PROMPT" --device cuda --max-new-tokens "$NEW" --ignore-eos --ids \
    > "$OUT/ortq_ids_$i.json" 2> "$OUT/ortq_generate_$i.txt"
done
echo "ortq (int4 + LoRA, ORT CUDA): $(tail -1 "$OUT/ortq_generate_2.txt")" | tee "$OUT/generate.txt"
python3 scripts/hf_generate_bench.py --config /tmp/g/m/config.json --prompt-tokens 128 --new-tokens "$NEW" \
  2>&1 | tail -1 | sed 's/^/transformers (fp16, SDPA): /' | tee -a "$OUT/generate.txt"
