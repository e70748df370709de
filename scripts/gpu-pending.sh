#!/usr/bin/env bash
# GPU machine: the device runs the open issues still wait for, in one or two calls, most
# important first, each cut to what is left of BUDGET seconds (default 560: one call's limit
# less its start). Every part writes its own folder, packed as $OUT/<part>.tgz, and one line per
# part goes to $OUT/summary.txt; a part that does not fit in what is left is skipped and says so.
#   race         issue 22: prepare's defaults against the PyTorch+PEFT peer at the seed's
#                settings, micro-batch 7 and 1, graph step (gpu-step.sh, 3B)
#   race8b       issue 22: the same at the 8B shape, micro-batch 7 (gpu-step.sh)
#   cvctiny      issue 22: CUDA against CPU over 20 steps on the synth tiny graph, whose
#                attention prepare writes as MultiHeadAttention (gpu-cuda-vs-cpu.sh)
#   decode3      issues 24 and 25 (gpu-decode3.sh): decode after the chunked argmax at batch 1
#                and 8, onnx-adapter and --merge parity, NF4 CUDA vs CPU with --dequantize-forward,
#                NF4 step time against int4, CUDA graph vs uncaptured ids on a trained model
#   decode8b     issue 24: the 8B shape's decode at batch 1 (gpu-decode8b.sh)
#   nf4b         issue 25: NF4 + double quant against int4 at the 3B shape, 4-bit and dense bases (gpu-nf4b.sh)
#   nf4k         issue 25: nf4b with NF4 prepared with --bnb4-kernel as well (BNB4K=1 gpu-nf4b.sh)
#   nf4b-8b      nf4b and decode8b in one part, their synth/prepare side by side (gpu-nf4b-8b.sh)
#   flagab       issue 22: prepare-flag A/Bs (--loss-chunks 2, --attention-forward=false) at 3B with the peer (gpu-flagab.sh)
#   decode-prof  issue 24: ncu of `ortq generate` on a 4-layer 3B-shape fused shared export
#                (gpu-profile-decode.sh): where a decode step's GPU time goes
#   gen2         issue 24: fused vs unfused (--fuse=false) shared export, CUDA graph vs
#                uncaptured ids (each twice), batch 1 and 8 (gpu-generate2.sh, 28 layers)
#   losscurve    issue 25: ortq vs PyTorch+PEFT over 200 steps, fp32 then fp16 (gpu-loss-curve.sh)
#   nf4          issue 25: NF4 + double quant vs int4 step time and memory (gpu-nf4.sh)
#   attnfwd      issue 22: prepare --attention-kernel attention and ORT_FPA_INTB_GEMM=1 against the
#                default step, 3B micro-batch 7, with the peer (gpu-attnfwd.sh)
#   trainprof    issue 22: one decoder layer by kernel family, dense base (gpu-profile.sh)
#   kernels      issue 22: package kernels' tests on the GPU (each CUDA kernel against float64),
#                from bin/kernels.test.xz: `go test -c -trimpath -ldflags="-s -w" -o
#                /tmp/kernels.test ./kernels && xz -9 -c /tmp/kernels.test > bin/kernels.test.xz`
#                here; it does not fit one call's carry beside .ort-gpu and bin/ortq.xz, so carry
#                it alone in a call on a warm machine
#   nccl         issue 28: one-rank NCCL vs the graph step on one GPU (gpu-nccl.sh, 1B shape)
# Usage (here: bash scripts/gpu-travel.sh off first; carry .ort-gpu and bin/ortq.xz):
#   PARTS="cvctiny race" BUDGET=560 bash scripts/gpu-pending.sh; then PARTS="race8b" or "nf4b" in a second call
set -u
cd "$(dirname "$0")/.."
. scripts/device-env.sh   # unpacks .ort-gpu into ~/ort once; each part sources it again
O=$OUT; BUDGET=${BUDGET:-560}; T0=$(date +%s)
PARTS=${PARTS:-cvctiny race}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> "$O/summary.txt"
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
# part NAME WANT CMD...: runs CMD with OUT=/tmp/pp-NAME for at most WANT seconds (less if less is left).
part() {
  local name=$1 want=$2; shift 2
  local l; l=$(left)
  if [ "$l" -lt 60 ]; then echo "$name: skipped, $l s left" >> "$O/summary.txt"; return; fi
  [ "$want" -gt "$l" ] && want=$l
  rm -rf /tmp/pp-$name; mkdir -p /tmp/pp-$name
  (OUT=/tmp/pp-$name timeout "$want" "$@" > /tmp/pp-$name/stdout.txt 2>&1)
  echo "$name: rc $? after $(( $(date +%s) - T0 )) s (limit $want s)" >> "$O/summary.txt"
  tar czf "$O/$name.tgz" -C /tmp pp-$name
}
for p in $PARTS; do
  case $p in
    race) part $p 480 env STEPKINDS=graph MBS="7 1" STEPS=15 bash scripts/gpu-step.sh ;;
    cvctiny) part $p 200 env MODEL=tiny bash scripts/gpu-cuda-vs-cpu.sh ;;
    race8b) part $p 540 env PRESET=llama-3.1-8b STEPKINDS=graph MBS=7 STEPS=15 bash scripts/gpu-step.sh ;;
    decode3) part $p 480 env BUDGET=440 bash scripts/gpu-decode3.sh ;;
    decode8b) part $p 420 bash scripts/gpu-decode8b.sh ;;
    nf4b) part $p 330 bash scripts/gpu-nf4b.sh ;;
    nf4k) part $p 420 env BNB4K=1 bash scripts/gpu-nf4b.sh ;;
    nf4b-8b) part $p 540 bash scripts/gpu-nf4b-8b.sh ;;
    flagab) part $p 520 bash scripts/gpu-flagab.sh ;;
    decode-prof) part $p 120 env LAYERS=4 NEW=4 bash scripts/gpu-profile-decode.sh ;;
    gen2) part $p 280 env LAYERS=28 NEW=256 SKIP_PEER=1 bash scripts/gpu-generate2.sh ;;
    losscurve) part $p 330 bash scripts/gpu-loss-curve.sh ;;
    nf4) part $p 300 env AGAIN=0 bash scripts/gpu-nf4.sh ;;
    attnfwd) part $p 500 bash scripts/gpu-attnfwd.sh ;;
    trainprof) part $p 240 env SKIP_FULL=1 SKIP_PEER=1 SKIP_WALL=1 BENCH_ARGS="--base dense" bash scripts/gpu-profile.sh ;;
    nccl) part $p 200 env PRESET=llama-3.2-1b STEPS=10 bash scripts/gpu-nccl.sh ;;
    kernels) part $p 90 bash -c 'xz -dc bin/kernels.test.xz > /tmp/kernels.test && chmod +x /tmp/kernels.test &&
      ORTQ_REQUIRE_CUDA=1 ORTQ_REQUIRE_ORT=1 /tmp/kernels.test -test.v' ;;
    *) echo "$p: unknown part" >> "$O/summary.txt" ;;
  esac
done
cat "$O/summary.txt"
