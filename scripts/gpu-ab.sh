#!/usr/bin/env bash
# GPU machine, one call: the graphs two ortq builds prepare, measured by the same runtime —
# an A/B of a graph change within one call (step times move between calls). bin/ortq.xz is
# the new build (it runs every bench), bin/ortq-old.xz the old one (it only prepares).
# Synthesizes PRESET (llama-3.2-3b), prepares it with each build, then runs `ortq bench
# --step graph` at micro-batch MB (7) on old, new, old, new and prints p50, mean, peak and
# the memory breakdown of each. Env: PRESET, MB, STEPS (17), OUT.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; MB=${MB:-7}; STEPS=${STEPS:-17}
xz -dc bin/ortq-old.xz > /tmp/ortq-old && chmod +x /tmp/ortq-old
$Q synth --preset $PRESET --quantize --out /tmp/ab-m --quiet --force
$Q prepare --model /tmp/ab-m/model.onnx --out /tmp/ab-new --quiet --force
/tmp/ortq-old prepare --model /tmp/ab-m/model.onnx --out /tmp/ab-old --quiet --force
for round in 1 2; do
  for v in old new; do
    $Q bench --artifacts /tmp/ab-$v --device cuda --micro-batch $MB --seq-len 512 --steps $STEPS --warmup 3 \
      --recompute layer --step graph --quiet --out "$OUT/ab-$v-$round" > /dev/null 2>&1
    echo "$v round $round: $(python3 "$(dirname "$0")/point.py" "$OUT/ab-$v-$round/report.json" --memory 2>&1 | tail -1)" | tee -a "$OUT/ab.txt"
  done
done
rm -f "$OUT"/ab-*/*.png "$OUT"/ab-*/*.svg
