#!/usr/bin/env bash
# GPU machine: a CUDA-graph training run of the embedded default model interrupted (SIGTERM
# once its first checkpoint exists; older checkpoints are pruned, so it waits for any) and resumed, against the same run uninterrupted: the
# adapter bytes and the final evaluation must be equal.
set -u
. "$(dirname "$0")/device-env.sh"
for i in $(seq 1 400); do echo "the quick brown fox $i jumps over the lazy dog number $((i*7)) and runs far away"; done > /tmp/r-data.txt
$Q prepare --model default --out /tmp/r-a --quiet --force > /dev/null 2>&1 || { echo "prepare failed"; exit 1; }
common="--artifacts /tmp/r-a --data /tmp/r-data.txt --tokenizer default --device cuda --step graph --max-steps 300 --micro-batch 4 --grad-accum 2 --max-seq-len 128 --quiet --force"
$Q train $common --save-every 1 --out /tmp/r-full > /tmp/r-full.log 2>&1; echo "uninterrupted rc $?"
$Q train $common --save-every 1 --out /tmp/r-int > /tmp/r-int.log 2>&1 &
pid=$!
for i in $(seq 1 600); do ls -d /tmp/r-int/checkpoints/step-* > /dev/null 2>&1 && break; sleep 0.05; done
kill -TERM $pid; wait $pid; echo "interrupted rc $?: $(ls /tmp/r-int/checkpoints | tr '\n' ' ')"
$Q train ${common/--force/} --save-every 1 --out /tmp/r-int --resume latest > /tmp/r-res.log 2>&1; echo "resumed rc $?"
grep -h "note\|CUDA graph" /tmp/r-full.log | head -3
cmp /tmp/r-full/adapter_model.safetensors /tmp/r-int/adapter_model.safetensors && echo "adapters identical"
python3 -c "
import json
a=json.load(open('/tmp/r-full/report.json')); b=json.load(open('/tmp/r-int/report.json'))
print('final eval', a['final_eval'], b['final_eval'], 'steps', a['optimizer_steps'], b['optimizer_steps']); print('notes', a.get('notes'), b.get('notes'))
"
