#!/usr/bin/env python3
"""transformers' generate speed for scripts/gpu-generate.sh (issue 14): a LlamaForCausalLM of
the given config.json with random weights, fp16, SDPA attention, on CUDA; batch 1, a prompt of
--prompt-tokens random ids, --new-tokens greedy tokens with EOS ignored. Prints one line:
prefill and decode tokens/s (decode: the tokens after the first, over their wall time,
measured as total minus a separate prefill run, the same split ortq generate reports)."""
import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    args = ap.parse_args()
    cfg = LlamaConfig.from_json_file(args.config)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dtype=torch.float16, device="cuda").eval()
    ids = torch.randint(3, cfg.vocab_size, (1, args.prompt_tokens), device="cuda")
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, **kw)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(ids, use_cache=True)
        torch.cuda.synchronize()
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, **kw)
        torch.cuda.synchronize()
        total = time.perf_counter() - t0
    n = out.shape[1] - ids.shape[1]
    print(f"prompt {args.prompt_tokens} tokens, prefill {args.prompt_tokens / prefill:.1f} tokens/s; "
          f"{n} new tokens, decode {(n - 1) / max(total - prefill, 1e-9):.1f} tokens/s")


if __name__ == "__main__":
    main()
