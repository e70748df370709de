#!/usr/bin/env bash
# GPU machine, one call: issue 22's A/Bs of graph and runtime options on one synthesized
# model (PRESET, default llama-3.2-3b), micro-batch MB (7), recompute per layer, graph step,
# interleaved A B C A B C so that drift shows:
#   A  the default artifacts (the first forward's attention as MultiHeadAttention);
#   B  `prepare --attention-kernel attention` (as one opset-23 Attention node instead,
#      passes.AttentionForward);
#   C  the default artifacts with ORT_FPA_INTB_GEMM=1 (ONNX Runtime's fpA_intB GEMM for the
#      MatMulNBits forwards; the step's plain warm-up runs precede its capture);
# then the PyTorch+PEFT peer once (SKIP_PEER=1 leaves it out). Prints p50, mean and peak of
# each. Env: PRESET, MB, STEPS (15), BASE (4bit; dense for the dense steps), OUT.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; MB=${MB:-7}; STEPS=${STEPS:-15}; BASE=${BASE:-4bit}
S="$OUT/summary.txt"
say() { echo "[$(date +%T)] $*" | tee -a "$S"; }
# gpu-decode3.sh, earlier in the same call, leaves the same 3B model and its default
# artifacts in /tmp/d3: reuse them (≈ 100 s of synth and prepare).
M=/tmp/af-m; A=/tmp/af-a
if [ "$PRESET" = llama-3.2-3b ] && [ -f /tmp/d3/a/manifest.json ]; then
  M=/tmp/d3/m; A=/tmp/d3/a; say "reusing gpu-decode3.sh's model and artifacts"
else
  timeout 300 $Q synth --preset "$PRESET" --quantize --out $M --quiet --force; say "synth rc $?"
  timeout 300 $Q prepare --model $M/model.onnx --out $A --quiet --force; say "prepare rc $?"
fi
timeout 300 $Q prepare --model $M/model.onnx --out /tmp/af-b --quiet --force --attention-kernel attention; say "prepare --attention-kernel attention rc $?"
point() { # name artifacts [env...]
  local name=$1 art=$2; shift 2
  env "$@" timeout 200 $Q bench --artifacts "$art" --device cuda --micro-batch "$MB" --seq-len 512 --steps "$STEPS" --warmup 3 \
    --recompute layer --base "$BASE" --step graph --quiet --out "/tmp/af-$name" > "/tmp/af-$name.txt" 2>&1
  say "$name rc $?: $(python3 "$(dirname "$0")/point.py" /tmp/af-$name/report.json --notes 2>&1 | tail -1)"
}
for round in 1 2; do
  point "A$round" $A
  point "B$round" /tmp/af-b
  point "C$round" $A ORT_FPA_INTB_GEMM=1
done
if [ "${SKIP_PEER:-0}" != 1 ]; then
  timeout 200 python3 bench/peer/torch_peft.py --micro-batch "$MB" --seq-len 512 --recompute layer --steps "$STEPS" --out "$OUT/peer.json" > /tmp/af-peer.txt 2>&1
  say "peer rc $?: $(python3 "$(dirname "$0")/point.py" "$OUT/peer.json" 2>&1 | tail -1)"
fi
