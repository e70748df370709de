#!/usr/bin/env bash
# GPU smoke/benchmark driver for the device machine (no Go there): runs the prebuilt
# bin/ortq.xz on a synthesized Llama-3.2-3B-shaped model. Usage (on the GPU machine, after
# the ONNX Runtime bundle (make ort-gpu-bundle) has been unpacked into ~/ort):
#   LAYERS=2 STEPS=6 bash scripts/gpu-smoke.sh
# Writes logs and reports to $OUT.
set -u
. "$(dirname "$0")/device-env.sh"
L=${LAYERS:-2}; STEPS=${STEPS:-6}; MB=${MB:-7}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
find . -name '*.go' -print0 | xargs -0 cat > /tmp/data.txt
t0=$(date +%s)
timeout 120 $Q synth --preset llama-3.2-3b --layers "$L" --out /tmp/m --quiet 2>&1 | tail -3 | tee "$OUT/synth.txt"
t1=$(date +%s); echo "synth ${L} layers: $((t1-t0)) s" | tee -a "$OUT/times.txt"
PLACE=${PLACE:-1}
args=(--model /tmp/m/model.onnx --out /tmp/a --quiet)
[ "$PLACE" = 1 ] && args+=(--check-placement --device cuda)
timeout 300 $Q prepare "${args[@]}" > "$OUT/prepare.txt" 2>&1; echo "prepare rc $?" >> "$OUT/prepare.txt"
t2=$(date +%s); echo "prepare: $((t2-t1)) s" | tee -a "$OUT/times.txt"
ls -la /tmp/a >> "$OUT/prepare.txt"
for rec in ${RECS:-layer none}; do
  base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 > "$OUT/mem_$rec.txt" &
  P=$!
  timeout 300 $Q train --artifacts /tmp/a --data /tmp/data.txt --tokenizer default --device cuda --recompute "$rec" \
    --max-steps "$STEPS" --micro-batch "$MB" --max-seq-len 512 --max-eval-batches 2 --quiet --out "/tmp/run_$rec" > "$OUT/train_$rec.txt" 2>&1
  echo "train rc $?" >> "$OUT/train_$rec.txt"
  kill $P
  peak=$(sort -n "$OUT/mem_$rec.txt" | tail -1)
  echo "recompute=$rec: GPU memory used before ${base} MiB, peak ${peak} MiB" | tee -a "$OUT/times.txt"
  cp "/tmp/run_$rec/report.json" "$OUT/report_$rec.json" 2>/dev/null
  t3=$(date +%s); echo "train $rec: $((t3-t2)) s" | tee -a "$OUT/times.txt"; t2=$t3
done
