#!/usr/bin/env bash
# GPU machine (one or two GPUs), one call: how the device-resident step's copies cost memory.
# With ORTQX_DIRECT_COPY=1 (the default) the Copier copies with ONNX Runtime's CopyTensors on
# CUDA (ortrun/directcopy.go); =0 makes it use its Identity copy sessions.
# For each way:
#   - `ortq bench --step graph` on the Llama-3.2-3B shape at micro-batch 7 (peak, the memory
#     breakdown's "outside the arena", the notes saying which way copied);
#   - with two GPUs, `ortq train --device cuda:0,cuda:1 --step device` for 12 steps: the
#     busiest GPU's memory per step (it grew ≈150 MB per step in the last measurement).
# A third bench point (copy sessions) sets the arena's max_dead_bytes_per_chunk to
# 4 MiB (ORTQX_ARENA_MAX_DEAD_BYTES; ONNX Runtime's default 128 MiB lets a chunk up to twice a
# request's size be handed out whole). Then the time of the default step beside the peer,
# once. Results in $OUT/summary.txt.
set -u
. "$(dirname "$0")/device-env.sh"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/summary.txt"; }
if [ ! -f /tmp/k-a/manifest.json ]; then
  timeout 150 $Q synth --preset llama-3.2-3b --quantize --out /tmp/k-m --quiet --force > /dev/null 2>&1; log "synth rc $?"
  timeout 200 $Q prepare --model /tmp/k-m/model.onnx --out /tmp/k-a --quiet --force > /dev/null 2>&1; log "prepare rc $?"
fi
for i in $(seq 1 8000); do echo "sample $i of the corpus says $((i*7)) things about $((i%97)) topics and more"; done > /tmp/c-data.txt
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
for direct in 1 0; do
  export ORTQX_DIRECT_COPY=$direct
  timeout 90 $Q bench --artifacts /tmp/k-a --device cuda --micro-batch 7 --seq-len 512 --steps 10 --warmup 3 \
    --recompute layer --step graph --quiet --out /tmp/c-b$direct > /dev/null 2>&1
  log "direct=$direct bench graph mb7: $(python3 "$(dirname "$0")/point.py" /tmp/c-b$direct/report.json --memory --notes 2>&1 | tail -1)"
  if [ "$gpus" -ge 2 ]; then
    timeout 120 $Q train --artifacts /tmp/k-a --data /tmp/c-data.txt --tokenizer default --max-seq-len 512 --micro-batch 7 --grad-accum 2 \
      --max-steps 12 --recompute layer --max-eval-batches 1 --save-every 0 --log-every 1 --quiet --force \
      --device cuda:0,cuda:1 --step device --out /tmp/c-t$direct > /tmp/c-t$direct.txt 2>&1
    log "direct=$direct two-device train rc $?: $(tail -1 /tmp/c-t$direct.txt); GiB per step: $(python3 -c "import json;print([round(json.loads(l).get('gpu_used_bytes',0)/2**30,2) for l in open('/tmp/c-t$direct/run.jsonl')])" 2>&1)"
  fi
done
unset ORTQX_DIRECT_COPY
ORTQX_ARENA_MAX_DEAD_BYTES=4194304 timeout 90 $Q bench --artifacts /tmp/k-a --device cuda --micro-batch 7 --seq-len 512 --steps 10 --warmup 3 \
  --recompute layer --step graph --quiet --out /tmp/c-bdead > /dev/null 2>&1
log "max dead 4 MiB bench graph mb7: $(python3 -c "import json;p=json.load(open('/tmp/c-bdead/report.json'))['points'][0];m=p.get('memory_breakdown') or {};a=p.get('ort_arena') or {};print(round(p['step_time']['p50_ms'],1),'ms, peak',round(p.get('peak_gpu_bytes',0)/2**30,2),'GiB, arena peak',round(a.get('peak_in_use_bytes',0)/2**30,2),'reserved',round(a.get('reserved_bytes',0)/2**30,2),'GiB')" 2>&1)"
timeout 120 python3 bench/peer/torch_peft.py --preset llama-3.2-3b --micro-batch 7 --seq-len 512 --steps 17 --warmup 3 \
  --recompute layer --out /tmp/c-peer.json > /dev/null 2>&1
log "peer mb7: $(python3 "$(dirname "$0")/point.py" /tmp/c-peer.json 2>&1 | tail -1)"
