#!/usr/bin/env bash
# Memory investigation on the GPU machine: one 2-layer Llama-3.2-3B-shaped model, the
# recomputing training graph, loss in 4 and 16 blocks (--loss-chunks), ONNX Runtime's profiler on.
set -u
. "$(dirname "$0")/device-env.sh"
find . -name '*.go' -print0 | xargs -0 cat > /tmp/data.txt
[ -f /tmp/m/model.onnx ] || $Q synth --preset llama-3.2-3b --layers 2 --out /tmp/m --quiet --force
for chunk in ${CHUNKS:-4 16}; do
  $Q prepare --model /tmp/m/model.onnx --out /tmp/a$chunk --quiet --force --loss-chunks $chunk ${PREP_ARGS:-} > "$OUT/prepare_$chunk.txt" 2>&1
  for rec in ${RECS:-layer}; do
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 > "$OUT/mem_${chunk}_$rec.txt" &
    P=$!
    ORTQX_PROFILE=${PROFILE:+/tmp/prof_${chunk}_$rec} timeout 300 $Q train --artifacts /tmp/a$chunk --data /tmp/data.txt --tokenizer default --device cuda --recompute $rec \
      --max-steps ${STEPS:-4} --micro-batch ${MB:-7} --max-seq-len 512 --max-eval-batches 1 --quiet --force --out /tmp/run > "$OUT/train_${chunk}_$rec.txt" 2>&1
    echo "rc $?" >> "$OUT/train_${chunk}_$rec.txt"
    kill $P
    echo "chunk=$chunk rec=$rec peak $(sort -n "$OUT/mem_${chunk}_$rec.txt" | tail -1) MiB; $(grep 'tokens/s' "$OUT/train_${chunk}_$rec.txt")" | tee -a "$OUT/summary.txt"
  done
done
ls /tmp/prof_* 2>/dev/null && for f in /tmp/prof_*; do xz -T0 -c "$f" > "$OUT/$(basename $f).xz"; done
