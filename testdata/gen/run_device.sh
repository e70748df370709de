#!/usr/bin/env bash
# Runs both generators on the GPU machine (torch, transformers, peft, onnx, tokenizers there) and
# packs what they wrote into $OUT: fixtures.tgz (testdata/llama + logs) and default.tgz
# (internal/defaultmodel + logs). The fixtures run on the CPU beside the GPU pretraining.
# Usage, from the repo root, after prepare_corpus.py made testdata/gen/_corpus:
#   OUT=/some/dir bash testdata/gen/run_device.sh [train-seconds]
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
rm -rf testdata/llama internal/defaultmodel .cache/fixtures-scratch .cache/default-scratch
mkdir -p .cache/fixtures-scratch .cache/default-scratch
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
(
  python3 testdata/gen/make_fixtures.py > .cache/fixtures-scratch/stdout.txt 2>&1
  echo "make_fixtures exit $?" >> .cache/fixtures-scratch/stdout.txt
  tar czf "$OUT/fixtures.tgz" testdata/llama .cache/fixtures-scratch
) &
FX=$!
python3 testdata/gen/make_default_model.py --train-seconds "${1:-100}" > .cache/default-scratch/stdout.txt 2>&1
echo "make_default_model exit $?" >> .cache/default-scratch/stdout.txt
tar czf "$OUT/default.tgz" internal/defaultmodel .cache/default-scratch
wait $FX
echo "==== fixtures (tail)"; tail -c 5000 .cache/fixtures-scratch/stdout.txt
echo "==== default (tail)"; tail -c 6000 .cache/default-scratch/stdout.txt
ls -la "$OUT"
