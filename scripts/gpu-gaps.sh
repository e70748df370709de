#!/usr/bin/env bash
# GPU machine: where the wall time of a step goes beyond kernel time. Nsight Systems traces a
# few training steps of a 2-layer Llama-3.2-3B-shape model (4-bit, micro-batch MB) and prints
# the CUDA API calls by total time (synchronizations, allocations, copies, launches), the
# kernels by total time, and the GPU idle time between kernels of the traced steps.
# Prerequisites as for scripts/gpu-bench.sh; `nsys` on the PATH or in /usr/local/cuda/bin.
set -u
. "$(dirname "$0")/device-env.sh"
MB=${MB:-7}
NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)
[ -n "$NSYS" ] || { echo "nsys not found"; exit 1; }
[ -d /tmp/gaps-a ] || { $Q synth --preset llama-3.2-3b --layers 2 --quantize --out /tmp/gaps-m --quiet --force >/dev/null 2>&1
  $Q prepare --model /tmp/gaps-m/model.onnx --out /tmp/gaps-a --quiet --force > /dev/null 2>&1; }
timeout 200 "$NSYS" profile -t cuda -o /tmp/gaps --force-overwrite true $Q bench --artifacts /tmp/gaps-a --device cuda \
  --micro-batch $MB --seq-len 512 --steps 3 --warmup 2 --recompute layer --quiet --out /tmp/gaps-b > "$OUT/gaps-run.txt" 2>&1
"$NSYS" stats --report cuda_api_sum --format csv -o /tmp/gaps-api /tmp/gaps.nsys-rep > /dev/null 2>&1
"$NSYS" export --type sqlite -o /tmp/gaps.sqlite --force-overwrite true /tmp/gaps.nsys-rep > /dev/null 2>&1
echo "== CUDA API calls by total time (whole run)"; head -16 /tmp/gaps-api_cuda_api_sum.csv | cut -d, -f1-4,9
python3 - <<'PY'
import sqlite3
db = sqlite3.connect("/tmp/gaps.sqlite")
k = db.execute("select start, end from CUPTI_ACTIVITY_KIND_KERNEL order by start").fetchall()
# the last 3 steps: from the last 45% of kernels (warm-up steps come first)
k = k[int(len(k) * 0.55):]
busy = sum(e - s for s, e in k); span = k[-1][1] - k[0][0]
gaps = [k[i + 1][0] - k[i][1] for i in range(len(k) - 1)]
big = sorted(g for g in gaps if g > 0)
print(f"== last kernels: {len(k)}, span {span/1e6:.1f} ms, kernel time {busy/1e6:.1f} ms, idle {sum(big)/1e6:.1f} ms")
for lo, hi in [(0, 5e3), (5e3, 2e4), (2e4, 1e5), (1e5, 1e6), (1e6, 1e12)]:
    sel = [g for g in big if lo <= g < hi]
    print(f"  gaps {lo/1e3:g}-{hi/1e3:g} us: {len(sel)}, {sum(sel)/1e6:.2f} ms")
rt = db.execute("select n.value, count(*), sum(r.end - r.start) from CUPTI_ACTIVITY_KIND_RUNTIME r join StringIds n on r.nameId = n.id where r.start >= ? group by n.value order by 3 desc limit 12", (k[0][0],)).fetchall()
print("== CUDA API calls during those kernels")
for name, c, t in rt:
    print(f"  {name}: {c} calls, {t/1e6:.2f} ms")
PY
