#!/usr/bin/env bash
# GPU machine: the same 20 optimizer steps of the default model on CUDA (fp16) and on the CPU,
# same seed and data; prints the largest relative difference of the per-step training losses
# and the final eval perplexities. DATA: a text file (default: the demo corpus if carried,
# else the repository's Go sources). Prerequisites as for scripts/gpu-bench.sh.
set -u
. "$(dirname "$0")/device-env.sh"
DATA=${DATA:-.cache/demo/brown-learned.txt}
if [ ! -s "$DATA" ]; then DATA=/tmp/cvc-data.txt; find . -name '*.go' -print0 | xargs -0 cat > "$DATA"; fi
# MODEL: default (the embedded model, a dynamo export) or tiny (`ortq synth --preset tiny`,
# the graph `ortq import` and `synth` write, beside the default's dynamo export).
MODEL=${MODEL:-default}
if [ "$MODEL" = tiny ]; then $Q synth --preset tiny --out /tmp/cvc-m --quiet --force; MODEL=/tmp/cvc-m/model.onnx; fi
# PREPARE_FLAGS: extra prepare flags (e.g. "--quant nf4 --double-quant --block-size 64").
# shellcheck disable=SC2086
$Q prepare --model "$MODEL" --out /tmp/cvc-a --force --quiet ${PREPARE_FLAGS:-} > "$OUT/cvc-prepare.txt" 2>&1 || { echo "prepare failed"; cat "$OUT/cvc-prepare.txt"; exit 1; }
for dev in cpu cuda; do
  timeout 300 $Q train --artifacts /tmp/cvc-a --data "$DATA" --tokenizer default --device $dev --max-steps 20 \
    --log-every 1 --seed 7 --lr 1e-3 --quiet --force --out /tmp/cvc-$dev > "$OUT/cvc-$dev.txt" 2>&1
  echo "train $dev rc $?"
done
python3 - /tmp/cvc-cpu/run.jsonl /tmp/cvc-cuda/run.jsonl <<'PY'
import json, sys
def losses(p):
    out = {}
    for line in open(p):
        r = json.loads(line)
        if "loss" in r and r.get("event") != "eval":
            out[r["step"]] = r["loss"]
    return out
a, b = losses(sys.argv[1]), losses(sys.argv[2])
steps = sorted(set(a) & set(b))
worst = max((abs(a[s] - b[s]) / abs(a[s]), s) for s in steps)
print(f"CUDA vs CPU: {len(steps)} steps compared, largest relative loss difference {worst[0]:.2e} at step {worst[1]}")
print("  cpu :", " ".join(f"{a[s]:.5f}" for s in steps))
print("  cuda:", " ".join(f"{b[s]:.5f}" for s in steps))
print("PASS" if worst[0] <= 1e-3 and len(steps) >= 20 else "FAIL (want ≤ 1e-3 at each of 20 steps)")
PY
grep -h "final eval" "$OUT/cvc-cpu.txt" "$OUT/cvc-cuda.txt"
