# Sourced by the scripts/gpu-*.sh drivers on the GPU machine: library paths for ONNX Runtime
# 1.29 + its CUDA provider in ~/ort (unpacked here, once per machine, from the `make
# ort-gpu-bundle` bundle .ort-gpu when the call carried it, or put there by hand) and CUDA 13,
# the prebuilt ortq from bin/ortq.xz as $Q, and an output dir $OUT.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# Every file is written under a temporary name and renamed into place, so that scripts that
# source this side by side never run a half-written library or binary ("Text file busy").
if [ ! -s "$HOME/ort/libonnxruntime_providers_cuda.so" ] && [ -f .ort-gpu/libonnxruntime_providers_cuda.so.xz ]; then
  mkdir -p "$HOME/ort"
  xz -T8 -dc .ort-gpu/libonnxruntime.so.1.xz > "$HOME/ort/libonnxruntime.so.1.$$" && mv -f "$HOME/ort/libonnxruntime.so.1.$$" "$HOME/ort/libonnxruntime.so.1"
  cp .ort-gpu/libonnxruntime_providers_shared.so "$HOME/ort/libonnxruntime_providers_shared.so.$$" &&
    mv -f "$HOME/ort/libonnxruntime_providers_shared.so.$$" "$HOME/ort/libonnxruntime_providers_shared.so"
  ln -sf libonnxruntime.so.1 "$HOME/ort/libonnxruntime.so"
  xz -T8 -dc .ort-gpu/libonnxruntime_providers_cuda.so.xz > "$HOME/ort/libonnxruntime_providers_cuda.so.$$" &&
    mv -f "$HOME/ort/libonnxruntime_providers_cuda.so.$$" "$HOME/ort/libonnxruntime_providers_cuda.so"
fi
export ORTQ_ORT_LIB=$HOME/ort/libonnxruntime.so.1
_cuda=$(dirname "$(ls /usr/local/cuda*/targets/x86_64-linux/lib/libcublas.so.13 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=$HOME/ort:$_cuda:${LD_LIBRARY_PATH:-}
unset _cuda
xz -dc bin/ortq.xz > /tmp/ortq.$$ && chmod +x /tmp/ortq.$$ && mv -f /tmp/ortq.$$ /tmp/ortq
Q=/tmp/ortq
