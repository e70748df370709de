#!/usr/bin/env python3
"""Hugging Face reference for ortq's generate tests (issue 14): generate/testdata/hf_reference.json.

Run from the repository root on a machine with torch, transformers and peft (the model is
tiny; the CPU is enough):

    python3 scripts/hf_reference.py

It loads the llama32 checkpoint fixture (hfimport/testdata/hf/llama32, float32, eager
attention) and the adapter ortq wrote for it (generate/testdata/llama32-adapter, written by
`go test ./generate -run TestReferenceAdapter -update` through train.SaveAdapter, i.e. what
`ortq train` writes), and records, for a fixed prompt:

    greedy_base / greedy_lora   model.generate(do_sample=False) ids of 64 new tokens, EOS
                                ignored (ortq generate is run without EOS for the comparison)
    logits_base / logits_lora   the prompt's logits [seq][vocab], float32

"_lora" is PeftModel.from_pretrained(base, adapter dir): the check that PEFT loads ortq's
adapter and agrees with ortq's export. generate's TestMatchesTransformers reads the file;
commit it once written.
"""
import argparse
import importlib
import json
import os

PROMPT = [1, 17, 99, 4, 60, 33, 2, 80]
NEW_TOKENS = 64


def versions():
    out = {}
    for m in ("torch", "transformers", "peft"):
        out[m] = importlib.import_module(m).__version__
    return out


def load(ck):
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(ck, dtype=torch.float32, attn_implementation="eager").eval()
    m.generation_config.eos_token_id = None  # 64 tokens whatever is drawn, as the Go test asks
    m.generation_config.pad_token_id = 0
    return m


def run(model):
    import torch
    ids = torch.tensor([PROMPT])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[0].float()
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0)
    new = out[0, len(PROMPT):].tolist()
    assert len(new) == NEW_TOKENS, len(new)
    return new, logits.tolist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="hfimport/testdata/hf/llama32")
    ap.add_argument("--adapter", default="generate/testdata/llama32-adapter")
    ap.add_argument("--out", default="generate/testdata/hf_reference.json")
    args = ap.parse_args()
    import torch
    from peft import PeftModel
    torch.manual_seed(0)
    torch.set_num_threads(4)
    greedy_base, logits_base = run(load(args.checkpoint))
    lora = PeftModel.from_pretrained(load(args.checkpoint), args.adapter).eval()
    greedy_lora, logits_lora = run(lora)
    rec = {"generator": "scripts/hf_reference.py", "versions": versions(),
           "checkpoint": args.checkpoint, "adapter": args.adapter, "prompt": PROMPT,
           "greedy_base": greedy_base, "greedy_lora": greedy_lora,
           "logits_base": logits_base, "logits_lora": logits_lora}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: greedy base {greedy_base[:8]}..., lora {greedy_lora[:8]}...")


if __name__ == "__main__":
    main()
