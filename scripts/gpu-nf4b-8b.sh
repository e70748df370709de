#!/usr/bin/env bash
# GPU machine, one call: gpu-nf4b.sh (issue 25) and gpu-decode8b.sh (issue 24) with their
# CPU-bound synth/prepare/export work run side by side first (mostly single-threaded graph
# building), then their GPU measurements one after the other, so that no two measurements
# share the GPU. Env: OUT.
set -u
. "$(dirname "$0")/device-env.sh"
S="$OUT/summary.txt"; D=$(dirname "$0")
log() { echo "[$(date +%T)] $*" | tee -a "$S"; }
PHASE=prep W=/tmp/d8 bash $D/gpu-decode8b.sh & p1=$!
PHASE=prep bash $D/gpu-nf4b.sh & p2=$!
wait $p2; log "nf4b prep done"
PHASE=measure bash $D/gpu-nf4b.sh
wait $p1; log "8B prep done"
PHASE=measure W=/tmp/d8 bash $D/gpu-decode8b.sh
