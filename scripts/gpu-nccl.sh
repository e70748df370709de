#!/usr/bin/env bash
# GPU machine, one call: issue 28's checks of data parallelism through NCCL (one process per
# GPU: `ortq train --nproc-per-node`, --world-size/--rank, train.NewRankStepper).
#   one GPU (any machine):
#     graph1     --device cuda:0 --step graph --grad-accum A (the single-GPU device step)
#     rank1      the same as a one-rank NCCL run (--world-size 1): NCCL loads, the all-reduce
#                runs on ONNX Runtime's device buffers; its losses vs graph1 (host AdamW on
#                the all-reduced sums vs the graph's AdamW: equal to ~1e-6)
#     launch1    the same through the launcher (--nproc-per-node 1)
#   N ≥ 2 GPUs (when lent), for W in 2 and 4 (≤ N):
#     graphW1    one GPU, --grad-accum W·A (the W-rank run's global batch)
#     ranksW     --nproc-per-node W --grad-accum W·A: tokens/s ÷ graphW1's (target ≥ 1.95× for 2,
#                ≥ 3.8× for 4), losses vs graphW1 (target ≤ 1e-6 relative), peak memory of rank 0's
#                GPU vs graphW1's (target within 5 %)
#     resume2    two ranks, constant LR: STEPS/2 steps, then --resume latest to STEPS; its losses
#                and adapter vs an uninterrupted two-rank run (target: bit for bit)
# Outputs (≤ 8 files): progress.txt, gpu.txt, summary.txt, logs.txt (the tail of every run),
# reports.json (every run's report and per-step losses).
# Env: PRESET (llama-3.2-3b), STEPS (20), MB (7), A (1: micro-batches per rank per step),
# REUSE=1 (keep /tmp/n-a), ORTQ_NCCL_LIB (default: found in PyTorch's nvidia-nccl wheel), TRAIN_ARGS.
set -u
. "$(dirname "$0")/device-env.sh"
PRESET=${PRESET:-llama-3.2-3b}; STEPS=${STEPS:-20}; MB=${MB:-7}; A=${A:-1}
R=/tmp/n-runs; rm -rf $R; mkdir -p $R
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/progress.txt"; }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
NGPU=$(wc -l < "$OUT/gpu.txt")
if [ -z "${ORTQ_NCCL_LIB:-}" ]; then
  ORTQ_NCCL_LIB=$(python3 -c 'import glob, os, site
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for p in glob.glob(os.path.join(d, "nvidia", "nccl", "lib", "libnccl.so.2")):
        print(os.path.realpath(p)); raise SystemExit' 2>/dev/null)
  [ -z "$ORTQ_NCCL_LIB" ] && ORTQ_NCCL_LIB=$(find / -name libnccl.so.2 -not -path '*/proc/*' 2>/dev/null | head -1)
fi
export ORTQ_NCCL_LIB
log "start: $NGPU GPU(s): $(head -1 "$OUT/gpu.txt"); NCCL: ${ORTQ_NCCL_LIB:-none found}"
if [ "${REUSE:-0}" != 1 ] || [ ! -f /tmp/n-a/manifest.json ]; then
  timeout 200 $Q synth --preset $PRESET --quantize --out /tmp/n-m --quiet --force > $R/synth.txt 2>&1; log "synth rc $?"
  timeout 300 $Q prepare --model /tmp/n-m/model.onnx --out /tmp/n-a --quiet --force > $R/prepare.txt 2>&1; log "prepare rc $?"
fi
for i in $(seq 1 40000); do echo "sample $i of the corpus says $((i*7)) things about $((i%97)) topics and more"; done > /tmp/n-data.txt
common="--artifacts /tmp/n-a --data /tmp/n-data.txt --tokenizer default --max-seq-len 512 --micro-batch $MB --recompute layer
  --max-eval-batches 1 --log-every 1 --quiet --step graph ${TRAIN_ARGS:-}"
run() { # name, timeout, args...
  local name=$1 t=$2; shift 2
  timeout $t $Q train $common --out $R/$name "$@" > $R/$name.txt 2>&1
  log "$name rc $?: $(tail -1 $R/$name.txt)"
}
run graph1 400 --device cuda:0 --grad-accum $A --max-steps $STEPS --save-every 0 --force
run rank1 400 --world-size 1 --device cuda:0 --grad-accum $A --max-steps $STEPS --save-every 0 --force
run launch1 400 --nproc-per-node 1 --device cuda:0 --grad-accum $A --max-steps $STEPS --save-every 0 --force
for W in 2 4; do
  [ "$NGPU" -lt $W ] && continue
  run graph${W}1 500 --device cuda:0 --grad-accum $((W*A)) --max-steps $STEPS --save-every 0 --force
  run ranks$W 500 --nproc-per-node $W --device cuda:all --grad-accum $((W*A)) --max-steps $STEPS --save-every 0 --force
done
if [ "$NGPU" -ge 2 ]; then
  half=$((STEPS/2))
  run straight2 500 --nproc-per-node 2 --device cuda:0,cuda:1 --grad-accum $((2*A)) --max-steps $STEPS --schedule constant --save-every $half --force
  run resume2 500 --nproc-per-node 2 --device cuda:0,cuda:1 --grad-accum $((2*A)) --max-steps $half --schedule constant --save-every $half --force
  run resume2b 500 --nproc-per-node 2 --device cuda:0,cuda:1 --grad-accum $((2*A)) --max-steps $STEPS --schedule constant --save-every $half \
    --resume latest --out $R/resume2
  if cmp -s $R/straight2/adapter_model.safetensors $R/resume2/adapter_model.safetensors; then log "resume2: adapter equals straight2's bit for bit"
  else log "resume2: adapter DIFFERS from straight2's"; fi
fi
for f in $R/*.txt; do echo "== $(basename $f)"; tail -5 $f; done > "$OUT/logs.txt"
python3 - "$R" "$OUT" "$(dirname "$0")" <<'PY' | tee "$OUT/summary.txt" | tee -a "$OUT/progress.txt"
import json, os, sys
R, out, G = sys.argv[1], sys.argv[2], 2**30
sys.path.insert(0, sys.argv[3])
from runs import load_run
def load(name):
    return load_run(os.path.join(R, name))
names = ["graph1", "rank1", "launch1", "graph21", "ranks2", "graph41", "ranks4", "straight2", "resume2"]
runs = {n: load(n) for n in names}
json.dump(runs, open(os.path.join(out, "reports.json"), "w"), indent=1, default=str)
def rel(a, b):
    return max((abs(x - y) / abs(y) for x, y in zip(a["losses"], b["losses"])), default=float("nan"))
pairs = [("rank1", "graph1"), ("launch1", "graph1"), ("ranks2", "graph21"), ("ranks4", "graph41"), ("resume2", "straight2")]
for n in names:
    r = runs[n]
    if r is None:
        print(f"{n}: no report"); continue
    print(f"{n}: {r['tokens_per_second']:.0f} tokens/s, step p50 {r['step_time']['p50_ms']:.1f} ms, peak GPU {r.get('peak_gpu_bytes', 0) / G:.2f} GiB, "
          f"{len(r['losses'])} steps, final loss {r['losses'][-1] if r['losses'] else float('nan'):.6f}")
for a, b in pairs:
    if runs[a] and runs[b]:
        ra, rb = runs[a], runs[b]
        print(f"{a} vs {b}: {ra['tokens_per_second'] / rb['tokens_per_second']:.3f}x tokens/s, losses max rel {rel(ra, rb):.2e} over "
              f"{min(len(ra['losses']), len(rb['losses']))} steps, peak GPU {ra.get('peak_gpu_bytes', 0) / max(1, rb.get('peak_gpu_bytes', 0)):.3f}x")
PY
