#!/usr/bin/env bash
# Here, before and after a GPU call that must carry the CUDA bundle (.ort-gpu, ~51 MB) and
# bin/ortq.xz (~12 MB) at once: the working tree travels too, and with every tracked file it
# passes the call's 64 MiB. `off` removes from the working tree the tracked files no GPU run
# reads (test fixtures, earlier results, third_party's headers, the embedded default model:
# about 11 MB) and copies ../shared/device/ncu-kernels.py (the kernel-family table of the ncu
# scripts, outside the repository) into scripts/, untracked, so that it travels; `on` restores
# the removed files from git (and nothing else) and removes that copy. Commit nothing between the two.
#   bash scripts/gpu-travel.sh off; <the run call, carry .ort-gpu and bin/ortq.xz>; bash scripts/gpu-travel.sh on
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  off)
    if ! git diff --quiet; then echo "gpu-travel: the tree has uncommitted changes; commit them first" >&2; exit 1; fi
    git ls-files -z -- ':(glob)**/testdata/**' bench/results third_party internal/defaultmodel/model.onnx | xargs -0 rm -f
    if [ -f ../shared/device/ncu-kernels.py ]; then cp ../shared/device/ncu-kernels.py scripts/ncu-kernels.py; fi ;;
  on) git ls-files -z --deleted | xargs -0 -r git checkout -- && rm -f scripts/ncu-kernels.py ;;
  *) echo "usage: gpu-travel.sh off|on" >&2; exit 2 ;;
esac
echo "tracked files present: $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes"
