#!/usr/bin/env python3
"""transformers' generate speed, the peer of `ortq bench generate` (issue 24; first written for
scripts/gpu-generate.sh, issue 14): a LlamaForCausalLM of the given config.json (the one
`ortq synth --preset ...` writes) with random weights, fp16, SDPA attention, on CUDA; --batch
prompts of --prompt-tokens random ids, --new-tokens greedy tokens each with EOS ignored.

Prints one line (prefill and decode tokens/s; decode: the tokens after each row's first, over
their wall time, measured as total minus a separate prefill run — the split ortq reports) and,
with --out, writes the same figures as `ortq bench generate`'s report.json (schema
ortq-bench/1, one point with a "generate" object) for `ortq bench generate --peer FILE`:
time to first token = the prefill run; per-token latency = the time between successive
tokens a streamer sees in the measured generate; peak GPU = torch.cuda.max_memory_reserved.
"""
import argparse
import datetime
import json
import math
import socket
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.streamers import BaseStreamer


class Clock(BaseStreamer):
    """Records the time of every put (the prompt, then each step's tokens)."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def percentile(xs, q):
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100.0
    f = math.floor(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--out", help="write an ortq-bench/1 result here")
    args = ap.parse_args()
    cfg = LlamaConfig.from_json_file(args.config)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dtype=torch.float16, device="cuda").eval()
    ids = torch.randint(3, cfg.vocab_size, (args.batch, args.prompt_tokens), device="cuda")
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, **kw)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        model(ids, use_cache=True)
        torch.cuda.synchronize()
        prefill = time.perf_counter() - t0
        clock = Clock()
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, streamer=clock, **kw)
        torch.cuda.synchronize()
        total = time.perf_counter() - t0
    n = out.shape[1] - ids.shape[1]
    decode = args.batch * (n - 1) / max(total - prefill, 1e-9)
    print(f"prompt {args.prompt_tokens} tokens, prefill {args.batch * args.prompt_tokens / prefill:.1f} tokens/s; "
          f"{n} new tokens, decode {decode:.1f} tokens/s")
    if args.out:
        write(args, cfg, prefill, decode, clock.times[2:], n)


def write(args, cfg, prefill, decode, times, n):
    """The ortq-bench/1 result: one point, its generate figures."""
    steps = [(b - a) * 1e3 for a, b in zip(times, times[1:])] or [float("nan")]
    lat = dict(count=len(steps), mean_ms=sum(steps) / len(steps), p50_ms=percentile(steps, 50),
               p95_ms=percentile(steps, 95), min_ms=min(steps), max_ms=max(steps))
    reserved = torch.cuda.max_memory_reserved()
    gen = dict(batch=args.batch, prompt_tokens=args.prompt_tokens, new_tokens=n, kv_cache="transformers DynamicCache",
               cuda_graph=False, prefill_tokens_per_second=args.batch * args.prompt_tokens / prefill,
               time_to_first_token_ms=prefill * 1e3, decode_tokens_per_second=decode, token_latency=lat)
    p = torch.cuda.get_device_properties(0)
    point = dict(label=f"generate batch {args.batch} prompt {args.prompt_tokens} new {n}",
                 params=dict(micro_batch=args.batch, seq_len=args.prompt_tokens, bits=16, recompute="none"),
                 device="cuda", precision="float16", warmup=1, steps=1, tokens_per_step=args.batch * n,
                 tokens_per_second=decode, step_time=lat, peak_gpu_bytes=reserved, gpu_source="torch-allocator",
                 peak_gpu_allocated_bytes=torch.cuda.max_memory_allocated(), peak_gpu_reserved_bytes=reserved,
                 mfu=None, hfu=None, peak_flops=None, generate=gen)
    import transformers
    res = dict(schema="ortq-bench/1", tool="transformers", created_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               machine=dict(hostname=socket.gethostname(), gpus=[dict(index=0, name=p.name, memory=p.total_memory)],
                            runtime="torch %s (CUDA %s)" % (torch.__version__, torch.version.cuda),
                            extra=dict(transformers=transformers.__version__)),
               config=dict(config=args.config, batch=args.batch, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                           attention="sdpa", dtype="float16", weights="random"),
               reference_ms=None, points=[point])
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
