#!/usr/bin/env bash
# Issue 24 on the GPU machine, in one call (no Go there: the prebuilt bin/ortq.xz):
#   1. the Llama-3.2-3B shape, random weights (ortq synth --dtype float16 --quantize: int4 base,
#      fp16 activations) → prepare (LoRA q_proj,v_proj r 8) → export with the LoRA as separate
#      MatMuls, once with --kv-cache shared (GroupQueryAttention, cache written in place) and
#      once in the default concat layout;
#   2. the check: greedy ids of a 128-token prompt, 256 new tokens, EOS ignored, from the
#      CUDA-graph decode equal the uncaptured decode's (--cuda-graph=false) token for token;
#      also shown beside the concat export's (a different attention kernel: fp16 rounding may
#      part them late, reported, not required);
#   3. ortq bench generate: batch 1 with and without the CUDA graph, batch 8, the concat export
#      at batch 1 (the old path), then transformers' generate on the same shape (fp16, SDPA)
#      as the peer, batch 1 and 8.
# Usage:  LAYERS=28 NEW=256 bash scripts/gpu-generate2.sh   (PRESET=tiny DEVICE=cpu: a dry run anywhere;
#         SKIP_PEER=1 leaves transformers out; EXTRA=1 adds the onnx-adapter and --merge exports at batch 1)
# $OUT (≤ 8 files): summary.txt (everything to read first), gpu.txt, log.txt (every command's
# output), bench-b1.json / bench-b8.json (ortq's report.json, CUDA graph), peer-b1.json /
# peer-b8.json (transformers), ids.txt (the id lists compared in 2).
set -u
. "$(dirname "$0")/device-env.sh"
L=${LAYERS:-28}; NEW=${NEW:-256}; W=/tmp/g2; PRESET=${PRESET:-llama-3.2-3b}; DEV=${DEVICE:-cuda}
S="$OUT/summary.txt"; LOG="$OUT/log.txt"
say() { echo "[$(date +%T)] $*" | tee -a "$S"; }
run() { echo "+ $*" >> "$LOG"; "$@" >> "$LOG" 2>&1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
mkdir -p $W
run timeout 300 $Q synth --preset "$PRESET" --layers "$L" --dtype float16 --quantize --out $W/m --quiet --force; say "synth rc $?"
run timeout 600 $Q prepare --model $W/m/model.onnx --out $W/a --quiet --force; say "prepare rc $?"
for kv in shared concat; do
  run timeout 600 $Q export --artifacts $W/a --adapter $W/a/lora_init.safetensors --tokenizer default --kv-cache $kv --out $W/e-$kv --force --quiet
  say "export --kv-cache $kv rc $?"
done
grep -h "GEMV" "$LOG" | head -3 | sed 's/^/GEMV warning: /' | tee -a "$S"
# About 128 tokens of text (scripts/gpu-generate.sh's prompt); generate prints the exact count.
PROMPT=$(Q=$Q python3 - <<'P'
import json, os, subprocess
q = os.environ["Q"]
text = " ".join(["the study of language and of the history of science"] * 30)
run = lambda args, inp: subprocess.run([q, "tokenize", "--tokenizer", "default"] + args, input=inp, capture_output=True, text=True).stdout.splitlines()[0]
ids = json.loads(run([], text))[:128]
print(json.loads(run(["--decode"], json.dumps(ids))))
P
)
gen() { timeout 300 $Q generate --prompt "$PROMPT" --device "$DEV" --max-new-tokens "$NEW" --ignore-eos --ids "$@"; }
gen --model $W/e-shared > $W/ids-graph.json 2> $W/graph.err; say "generate shared, CUDA graph rc $?: $(tr '\n' ' ' < $W/graph.err)"
gen --model $W/e-shared --cuda-graph=false > $W/ids-plain.json 2> $W/plain.err; say "generate shared, uncaptured rc $?: $(tr '\n' ' ' < $W/plain.err)"
gen --model $W/e-concat > $W/ids-concat.json 2> $W/concat.err; say "generate concat rc $?: $(tr '\n' ' ' < $W/concat.err)"
for f in graph plain concat; do echo "$f: $(cat $W/ids-$f.json)"; done > "$OUT/ids.txt"
python3 - "$W" <<'P' | tee -a "$S"
import json, sys
w = sys.argv[1]
ids = {f: json.load(open(f"{w}/ids-{f}.json")) for f in ("graph", "plain", "concat")}
def cmp(a, b):
    x, y = ids[a], ids[b]
    n = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), None)
    if n is None and len(x) == len(y):
        return f"EQUAL ({len(x)} tokens)"
    return f"DIFFER at new token {n} of {len(x)}/{len(y)}"
print("CHECK CUDA-graph decode vs uncaptured decode:", cmp("graph", "plain"))
print("info  shared export vs concat export:", cmp("graph", "concat"))
P
# Batch rows of different lengths (right-padded prefill, per-row positions) against each
# prompt alone, CUDA graph on: the CPU tests require equality; on the GPU the fp16 4-bit GEMV
# of 3 rows may round otherwise than of 1, so a late divergence is rounding, one at token 0
# a padding bug. Reported, not required.
printf '%s\n' '{"prompt": "the history of science"}' '{"prompt": "a study of language and of the history of science in the"}' '{"prompt": "language"}' > $W/p.jsonl
timeout 300 $Q generate --model $W/e-shared --prompts $W/p.jsonl --device "$DEV" --max-new-tokens 32 --ignore-eos --ids --quiet > $W/batch.jsonl 2>> "$LOG"
for p in "the history of science" "a study of language and of the history of science in the" "language"; do
  timeout 300 $Q generate --model $W/e-shared --prompt "$p" --device "$DEV" --max-new-tokens 32 --ignore-eos --ids --quiet 2>> "$LOG"
done > $W/alone.txt
python3 - "$W" <<'P' | tee -a "$S"
import json, sys
w = sys.argv[1]
batch = [json.loads(l)["ids"] for l in open(f"{w}/batch.jsonl")]
alone = [json.loads(l) for l in open(f"{w}/alone.txt") if l.strip()]
for i, (b, a) in enumerate(zip(batch, alone)):
    n = next((j for j, (p, q) in enumerate(zip(b, a)) if p != q), None)
    print(f"info  batch row {i} vs alone:", "EQUAL" if n is None and len(a) == len(b) else f"DIFFER at new token {n}")
P
for b in 1 8; do  # transformers first, so that ortq's reports show it beside them
  [ "${SKIP_PEER:-0}" = 1 ] && break
  run timeout 400 python3 scripts/hf_generate_bench.py --config $W/m/config.json --batch $b --prompt-tokens 128 --new-tokens "$NEW" --out "$OUT/peer-b$b.json"
  say "transformers batch $b rc $?"
done
peer() { [ -f "$OUT/peer-b$1.json" ] && echo "--peer $OUT/peer-b$1.json"; }
bg() { local name=$1; shift; run timeout 400 $Q bench generate --device "$DEV" --prompt-tokens 128 --new-tokens "$NEW" --warmup 1 --runs 3 --quiet --out $W/b-$name "$@"
  say "bench $name rc $?"; grep -h '^| ortq \|^| transformers \|^ortq ÷' $W/b-$name/report.md 2>/dev/null | tee -a "$S"; }
echo "| tool | batch | prompt | new | KV cache | CUDA graph | prefill tokens/s | time to first token (ms) | decode tokens/s | per-token p50 / p95 (ms) | peak GPU | peak host RSS |" >> "$S"
bg b1 --model $W/e-shared --batch 1 $(peer 1)
bg b1-nograph --model $W/e-shared --batch 1 --cuda-graph=false
bg b8 --model $W/e-shared --batch 8 $(peer 8)
bg b1-concat --model $W/e-concat --batch 1
cp $W/b-b1/report.json "$OUT/bench-b1.json" 2>/dev/null; cp $W/b-b8/report.json "$OUT/bench-b8.json" 2>/dev/null
if [ "${EXTRA:-0}" = 1 ]; then  # issue 24: the .onnx_adapter path and --merge within ±5 % of the plain export
  for v in "onnx-adapter:--format onnx-adapter" "merged:--merge"; do
    name=${v%%:*}
    run timeout 600 $Q export --artifacts $W/a --adapter $W/a/lora_init.safetensors --tokenizer default --kv-cache shared ${v#*:} --out $W/e-$name --force --quiet
    say "export $name rc $?"
    bg b1-$name --model $W/e-$name --batch 1
  done
fi
say "done"
