#!/usr/bin/env bash
# GPU machine: the graphs two ortq builds prepare, measured by the same runtime — an A/B of a
# graph change within one call (step times move between calls). bin/ortq.xz is the new
# build (it runs every bench), bin/ortq-old.xz the old one (it only prepares).
# Synthesizes PRESET (llama-3.2-3b), prepares it with the old build and with the new one
# once per VARIANTS entry (the new build's prepare flags, ';'-separated, "-" for none;
# default "-"), then runs `ortq bench --step graph --recompute layer` at micro-batch MB (7)
# on old, new variants…, twice over, and prints p50, mean, peak and the memory breakdown of
# each; PEER=1 then runs the PyTorch+PEFT peer over the same steps.
# The two builds and the CUDA bundle do not fit one call's carry: PHASE=new (carry .ort-gpu
# and bin/ortq.xz) synthesizes and prepares the new variants, then PHASE=old on the same
# warm machine (carry bin/ortq-old.xz) prepares the old graphs and measures; default both.
# OLD=0 measures the new variants alone (one call, carry .ort-gpu and bin/ortq.xz).
# Env: PRESET, MB, STEPS (17), VARIANTS, PEER, PHASE, OLD (1), W (work folder, /tmp/ab), OUT.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; MB=${MB:-7}; STEPS=${STEPS:-17}; W=${W:-/tmp/ab}; PHASE=${PHASE:-both}
VARIANTS=${VARIANTS:--}
IFS=';' read -r -a vs <<< "$VARIANTS"
say() { echo "[$(date +%T)] $*" | tee -a "$OUT/ab.txt"; }
mkdir -p "$W"
if [ "$PHASE" != old ]; then
  $Q synth --preset "$PRESET" --quantize --out "$W/m" --quiet --force; say "synth rc $?"
  for i in "${!vs[@]}"; do
    flags=${vs[$i]}; [ "$flags" = - ] && flags=
    # shellcheck disable=SC2086
    $Q prepare --model "$W/m/model.onnx" --out "$W/new$i" --quiet --force $flags; say "prepare new$i (${vs[$i]}) rc $?"
  done
fi
[ "$PHASE" = new ] && exit 0
names=()
if [ "${OLD:-1}" = 1 ]; then
  xz -dc bin/ortq-old.xz > /tmp/ortq-old && chmod +x /tmp/ortq-old
  /tmp/ortq-old prepare --model "$W/m/model.onnx" --out "$W/old" --quiet --force; say "prepare old rc $?"
  names=(old)
fi
for i in "${!vs[@]}"; do names+=("new$i"); done
for round in 1 2; do
  for v in "${names[@]}"; do
    $Q bench --artifacts "$W/$v" --device cuda --micro-batch "$MB" --seq-len 512 --steps "$STEPS" --warmup 3 \
      --recompute layer --step graph --quiet --out "$W/b-$v-$round" > "$W/b-$v-$round.txt" 2>&1
    say "$v round $round rc $?: $(python3 "$(dirname "$0")/point.py" "$W/b-$v-$round/report.json" --memory --losses 3 2>&1 | tail -1)"
    cp "$W/b-$v-$round/report.json" "$OUT/ab-$v-$round.json" 2>/dev/null
  done
done
if [ "${PEER:-0}" = 1 ]; then
  timeout 240 python3 bench/peer/torch_peft.py --preset "$PRESET" --micro-batch "$MB" --seq-len 512 --recompute layer \
    --steps "$STEPS" --out "$OUT/peer.json" > "$W/peer.txt" 2>&1
  say "peer rc $?: $(python3 "$(dirname "$0")/point.py" "$OUT/peer.json" 2>&1 | tail -1)"
fi
