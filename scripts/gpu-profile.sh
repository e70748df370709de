#!/usr/bin/env bash
# GPU machine, one call: the cost of one decoder layer by kernel family, for ortq and for the
# PyTorch+PEFT peer, with Nsight Compute (ncu) — and the wall time per layer.
#   1. synthesizes 4-bit Llama-3.2-3B-shape models with 1 and 2 layers (and 28 unless
#      SKIP_FULL=1), prepares them (PREP_ARGS passed to `ortq prepare`);
#   2. runs one training step of ortq (`ortq bench --step device`: the kernels of the CUDA-graph
#      step, without the capture micro-batches that bench adds to a graph step's warm-up)
#      and of the peer under ncu on the 1- and
#      2-layer models; ../shared/device/ncu-kernels.py prints one layer's kernel table
#      (2-layer minus 1-layer) and the whole 1-layer step (what lies outside the layers);
#   3. without ncu: ortq bench on the 2- and 28-layer models, so that
#      (28-layer step − 2-layer step) / 26 is the wall time of one layer.
# Env: MB (micro-batch, 7), SEQ (512), PREP_ARGS, BENCH_ARGS (extra `ortq bench` flags), OUT,
# SKIP_PEER=1 (ortq only), SKIP_WALL=1 (no wall-time runs).
# Prerequisites as for scripts/gpu-bench.sh (~/ort holds ONNX Runtime + CUDA provider,
# bin/ortq.xz is the ortq binary).
set -u
. "$(dirname "$0")/device-env.sh"
MB=${MB:-7}; SEQ=${SEQ:-512}
NCUK=../shared/device/ncu-kernels.py
[ -f "$NCUK" ] || NCUK=./shared/device/ncu-kernels.py
[ -f "$NCUK" ] || NCUK=$(dirname "$0")/ncu-kernels.py  # a copy carried to the GPU machine
NCU=(ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --target-processes all)
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
layers="1 2"; [ "${SKIP_FULL:-0}" = 1 ] || layers="1 2 28"
for L in $layers; do
  $Q synth --preset llama-3.2-3b --layers $L --quantize --out /tmp/prof-m$L --quiet --force > /dev/null 2>&1
  $Q prepare --model /tmp/prof-m$L/model.onnx --out /tmp/prof-a$L --quiet --force ${PREP_ARGS:-} > "$OUT/prepare-L$L.txt" 2>&1
  log "L$L synth+prepare rc $?"
done
for L in 1 2; do
  timeout 240 "${NCU[@]}" --log-file "$OUT/ortq-L$L.csv" $Q bench --artifacts /tmp/prof-a$L --device cuda \
    --micro-batch $MB --seq-len $SEQ --steps 1 --warmup 0 --recompute layer --step device --quiet ${BENCH_ARGS:-} --out /tmp/prof-b$L > "$OUT/ortq-ncu-L$L.txt" 2>&1
  log "ortq ncu L$L rc $?"
  [ "${SKIP_PEER:-0}" = 1 ] && continue
  timeout 240 "${NCU[@]}" --log-file "$OUT/peer-L$L.csv" python3 bench/peer/torch_peft.py --layers $L \
    --micro-batch $MB --seq-len $SEQ --steps 1 --warmup 0 --recompute layer --out /tmp/prof-peer$L.json > "$OUT/peer-ncu-L$L.txt" 2>&1
  log "peer ncu L$L rc $?"
done
for who in ortq peer; do
  [ -f "$OUT/$who-L2.csv" ] || continue
  python3 "$NCUK" "$OUT/$who-L1.csv" "$OUT/$who-L2.csv" > "$OUT/$who-layer.txt" 2>&1
  python3 "$NCUK" "$OUT/$who-L1.csv" > "$OUT/$who-L1-step.txt" 2>&1
  echo "=== $who: one decoder layer (2-layer minus 1-layer step)"; head -40 "$OUT/$who-layer.txt"
  echo "=== $who: whole 1-layer step"; head -25 "$OUT/$who-L1-step.txt"
done
for L in 2 28; do
  [ -d /tmp/prof-a$L ] && [ "${SKIP_WALL:-0}" != 1 ] || continue
  timeout 240 $Q bench --artifacts /tmp/prof-a$L --device cuda --micro-batch $MB --seq-len $SEQ --steps 10 --warmup 3 \
    --recompute layer --quiet ${BENCH_ARGS:-} --out "$OUT/wall-L$L" > "$OUT/wall-L$L.txt" 2>&1
  log "ortq wall L$L rc $?"
done
rm -f "$OUT"/*/*.png "$OUT"/*/*.svg
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
p50 = {}
for L in (2, 28):
    f = os.path.join(out, f"wall-L{L}", "report.json")
    if os.path.exists(f):
        p50[L] = json.load(open(f))["points"][0]["step_time"]["p50_ms"]
print("ortq step p50 by layers:", p50)
if len(p50) == 2:
    per = (p50[28] - p50[2]) / 26
    print(f"ortq wall per layer {per:.2f} ms; outside the layers ≈ {p50[2] - 2 * per:.1f} ms")
PY
