#!/usr/bin/env bash
# GPU machine, one call: where the 3B step's time goes between recomputation policies and the
# 4-bit GEMM path, with the PyTorch+PEFT peer in the same call. Synthesizes PRESET (llama-3.2-3b,
# 4-bit), prepares it (PREP_ARGS) with bin/ortq.xz and with each older build bin/ortq-NAME.xz
# named in BUILDS (their graphs, measured by the new build: an A/B of graph changes), then
# runs, each as its own `ortq bench` point (medians of STEPS after 3 warm-up): every
# "LABEL:BUILD:ENV:ARGS" entry of POINTS (BUILD empty: the new build's artifacts), and the
# peer for each recompute setting in PEER_RECOMPUTE (layer none). VARIANTS lists
# "NAME:ARGS" artifacts the new build prepares with other options (ARGS with commas for
# spaces), which POINTS name as BUILD. Env: PRESET, MB (7), STEPS (17), REUSE=1.
set -u
. "$(dirname "$0")/device-env.sh"
R=/tmp/policy-res; rm -rf $R; mkdir -p $R  # reports; $OUT gets progress.txt and one tarball
PRESET=${PRESET:-llama-3.2-3b}; MB=${MB:-7}; STEPS=${STEPS:-17}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
log "start $(cat "$OUT/gpu.txt")"
if [ "${REUSE:-0}" != 1 ] || [ ! -f /tmp/p-a/manifest.json ]; then
  timeout 200 $Q synth --preset $PRESET --quantize --out /tmp/p-m --quiet --force > "$R/synth.txt" 2>&1; log "synth rc $?"
  timeout 300 $Q prepare --model /tmp/p-m/model.onnx --out /tmp/p-a --quiet --force ${PREP_ARGS:-} > "$R/prepare.txt" 2>&1; log "prepare rc $?"
fi
for b in ${BUILDS:-}; do
  xz -dc bin/ortq-$b.xz > /tmp/ortq-$b && chmod +x /tmp/ortq-$b
  timeout 300 /tmp/ortq-$b prepare --model /tmp/p-m/model.onnx --out /tmp/p-a-$b --quiet --force ${PREP_ARGS:-} > "$R/prepare-$b.txt" 2>&1; log "prepare with $b rc $?"
done
for v in ${VARIANTS:-}; do  # NAME:PREPARE-ARGS (commas for spaces): the new build, other prepare options
  name=${v%%:*}; extra=${v#*:}
  timeout 300 $Q prepare --model /tmp/p-m/model.onnx --out /tmp/p-a-$name --quiet --force ${PREP_ARGS:-} ${extra//,/ } > "$R/prepare-$name.txt" 2>&1; log "prepare $name (${extra//,/ }) rc $?"
done
IFS=';' read -ra pts <<< "${POINTS:-graph::--recompute layer --step graph}"
for pt in "${pts[@]}"; do
  label=${pt%%:*}; rest=${pt#*:}; build=${rest%%:*}; rest=${rest#*:}; envs=${rest%%:*}; args=${rest#*:}
  art=/tmp/p-a${build:+-$build}
  env $envs timeout 240 $Q bench --artifacts $art --device cuda --micro-batch $MB --seq-len 512 --steps $STEPS --warmup 3 \
    --quiet $args --out "$R/o-$label" > "$R/o-$label.txt" 2>&1
  log "ortq $label rc $?: $(python3 "$(dirname "$0")/point.py" "$R/o-$label/report.json" --notes 2>&1 | tail -1)"
done
for rc in ${PEER_RECOMPUTE:-layer}; do
  timeout 240 python3 bench/peer/torch_peft.py --preset $PRESET --micro-batch $MB --seq-len 512 --steps $STEPS --warmup 3 \
    --recompute $rc --out "$R/peer-$rc.json" > "$R/peer-$rc.txt" 2>&1
  log "peer $rc rc $?: $(python3 "$(dirname "$0")/point.py" "$R/peer-$rc.json" 2>&1 | tail -1)"
done
rm -f $R/*/*.png $R/*/*.svg $R/*/memory.jsonl
tar -czf "$OUT/policy-res.tgz" -C $R .
