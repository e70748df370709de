#!/usr/bin/env bash
# GPU machine, one call: issue 22's A/B of prepare flags — one synthesized model (PRESET,
# default llama-3.2-3b) prepared once per variant, then `ortq bench` at micro-batch MB (7),
# recompute per layer, graph step, --base BASE (dense: what --base auto takes at 3B on an
# H100 or H200), interleaved V1 V2 … V1 V2 …, then the PyTorch+PEFT peer over the same
# number of steps (SKIP_PEER=1 leaves it out). VARIANTS lists the variants' prepare flags,
# separated by ';' ("-" for none), default: the default artifacts, --loss-chunks 2 (against
# the default 4 blocks) and --attention-forward=false (the first forward's attention
# decomposed, against the default MultiHeadAttention). Env: PRESET, MB, STEPS (15), BASE,
# VARIANTS, OUT.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; MB=${MB:-7}; STEPS=${STEPS:-15}; BASE=${BASE:-dense}
VARIANTS=${VARIANTS:--;--loss-chunks 2;--attention-forward=false}
S="$OUT/summary.txt"
say() { echo "[$(date +%T)] $*" | tee -a "$S"; }
timeout 200 $Q synth --preset "$PRESET" --quantize --out /tmp/fa-m --quiet --force; say "synth rc $?"
IFS=';' read -r -a vs <<< "$VARIANTS"
for i in "${!vs[@]}"; do
  flags=${vs[$i]}; [ "$flags" = - ] && flags=
  # shellcheck disable=SC2086
  timeout 300 $Q prepare --model /tmp/fa-m/model.onnx --out /tmp/fa-a$i --quiet --force $flags; say "prepare v$i (${vs[$i]}) rc $?"
done
for round in 1 2; do
  for i in "${!vs[@]}"; do
    timeout 200 $Q bench --artifacts /tmp/fa-a$i --device cuda --micro-batch "$MB" --seq-len 512 --steps "$STEPS" --warmup 3 \
      --recompute layer --base "$BASE" --step graph --quiet --out "/tmp/fa-b$i-$round" > "/tmp/fa-b$i-$round.txt" 2>&1
    say "v$i (${vs[$i]}) round $round rc $?: $(python3 "$(dirname "$0")/point.py" /tmp/fa-b$i-$round/report.json --losses 4 2>&1 | tail -1)"
    cp "/tmp/fa-b$i-$round/report.json" "$OUT/bench-v$i-$round.json" 2>/dev/null
  done
done
if [ "${SKIP_PEER:-0}" != 1 ]; then
  timeout 240 python3 bench/peer/torch_peft.py --preset "$PRESET" --micro-batch "$MB" --seq-len 512 --recompute layer --steps "$STEPS" --out "$OUT/peer.json" > /tmp/fa-peer.txt 2>&1
  say "peer rc $?: $(python3 "$(dirname "$0")/point.py" "$OUT/peer.json" 2>&1 | tail -1)"
fi
