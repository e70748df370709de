#!/usr/bin/env python3
"""LoRA learning-rate sweep on the embedded default model, in PyTorch+PEFT (fp32 base), to ground
the demo's expected perplexity drop and its hyperparameters.

Loads the weights back from internal/defaultmodel/model.onnx (so it measures exactly the shipped
model): named initializers (`m.<hf name>`) map directly; the exporter's `val_NNN` linear weights
([in, out]) are mapped through the `pkg.torch.onnx.fx_node` metadata of the MatMul that reads them
(`aten.linear.default(args = (..., %p_m_<hf name with _>))`) and transposed. The load is checked
against onnx.reference logits. Fine-tunes on Brown J (files split 90/10 with seed 0, as
make_default_model.py's check) and reports held-out J perplexity at several step counts, then
writes the table into internal/defaultmodel/README.md (section "LoRA sweep").
"""
import argparse
import gzip
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# The ONNX → transformers weight loader is the loss-curve script's (it travels to the GPU
# machine without testdata/).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from peft_loss_curve import load_from_onnx  # noqa: E402

SECTION = "## LoRA sweep"


def encode(tok, docs, eos):
    out = []
    for e in tok.encode_batch([d["text"] for d in docs], add_special_tokens=False):
        out.extend(e.ids)
        out.append(eos)
    return torch.tensor(out, dtype=torch.int64)


@torch.no_grad()
def eval_loss(model, stream, block, device):
    model.eval()
    n = (len(stream) - 1) // block
    tot, cnt = 0.0, 0
    for s in range(0, n, 64):
        x = torch.stack([stream[i * block:(i + 1) * block + 1] for i in range(s, min(n, s + 64))]).to(device)
        lg = model(input_ids=x[:, :-1], use_cache=False).logits.float()
        tot += F.cross_entropy(lg.reshape(-1, lg.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
        cnt += x[:, 1:].numel()
    return tot / cnt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default="internal/defaultmodel")
    ap.add_argument("--corpus", default="testdata/gen/_corpus")
    ap.add_argument("--lrs", default="2e-3,5e-3,1e-2,2e-2")
    ap.add_argument("--evals", default="50,100,200,400")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--out-json", default=".cache/lora-sweep.json")
    a = ap.parse_args()
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfgd = json.load(open(os.path.join(a.model_dir, "config.json")))
    cfg = LlamaConfig.from_dict(cfgd)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).float().eval()
    onnx_path = os.path.join(a.model_dir, "model.onnx")
    nl = load_from_onnx(onnx_path, model)
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(4, cfg.vocab_size, (2, 32), generator=g)
    mask = torch.ones(2, 32, dtype=torch.int64)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.numpy()
    got = common.reference_run(onnx_path, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    diff = float(np.abs(got - want).max())
    print("loaded %d tensors from ONNX; logits vs onnx.reference max|diff| %.2e (max|logit| %.1f)" % (nl, diff, np.abs(want).max()), flush=True)
    assert diff < 1e-3, diff
    tok = Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    eos = tok.token_to_id("</s>")
    with gzip.open(os.path.join(a.corpus, "learned_cj.jsonl.gz"), "rt") as f:
        docs = [json.loads(l) for l in f]
    random.Random(0).shuffle(docs)  # same split as make_default_model.py's lora_check (seed 0)
    k = max(1, len(docs) // 10)
    ev, tr = encode(tok, docs[:k], eos), encode(tok, docs[k:], eos).to(device)
    model = model.to(device)
    base = eval_loss(model, ev, a.seq, device)
    print("held-out J: %d tokens, loss %.4f ppl %.2f; train %d tokens" % (len(ev), base, math.exp(base), len(tr)), flush=True)
    evals = [int(x) for x in a.evals.split(",")]
    rows = []
    sets = {"q,v": ["q_proj", "v_proj"], "all 7": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    for sname, targets in sets.items():
        for lr in [float(x) for x in a.lrs.split(",")]:
            import copy
            torch.manual_seed(0)
            pm = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=targets, task_type="CAUSAL_LM"))
            opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr)  # torch defaults otherwise (wd 0.01)
            gg = torch.Generator(device=device).manual_seed(0)
            res = {}
            t0 = time.time()
            for step in range(1, max(evals) + 1):
                pm.train()
                off = torch.randint(0, len(tr) - a.seq - 1, (a.batch,), device=device, generator=gg)
                x = tr[off[:, None] + torch.arange(a.seq + 1, device=device)[None, :]]
                lg = pm(input_ids=x[:, :-1], use_cache=False).logits
                loss = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), x[:, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if step in evals:
                    res[step] = math.exp(eval_loss(pm, ev, a.seq, device))
            rows.append({"targets": sname, "lr": lr, "ppl": res, "seconds": round(time.time() - t0, 1)})
            print("  %s lr %g: %s" % (sname, lr, " ".join("%d:%.2f" % kv for kv in res.items())), flush=True)
    out = {"base_ppl": math.exp(base), "eval_tokens": len(ev), "train_tokens": len(tr), "batch": a.batch, "seq": a.seq,
           "rows": rows, "load_check_max_abs_diff": diff, "versions": common.versions()}
    common.write_json(a.out_json, out)
    lines = [SECTION,
             "PyTorch+PEFT on the shipped weights (loaded back from model.onnx), fp32, LoRA r 8, alpha 32, dropout 0.1,",
             "AdamW (torch defaults but lr), constant lr, batch %dx%d random windows of Brown J train files (72 of 80, seed 0);" % (a.batch, a.seq),
             "held-out J (8 files, %d tokens) perplexity at block %d; before fine-tuning %.2f." % (len(ev), a.seq, math.exp(base)),
             "Made by `python3 testdata/gen/lora_sweep.py` (%s)." % ", ".join("%s %s" % kv for kv in out["versions"].items() if kv[0] in ("torch", "peft")),
             "",
             "| targets | lr | " + " | ".join("%d steps" % e for e in evals) + " |",
             "|---|---|" + "---|" * len(evals)]
    for r in rows:
        lines.append("| %s | %g | " % (r["targets"], r["lr"]) + " | ".join("%.2f" % r["ppl"][e] for e in evals) + " |")
    readme = os.path.join(a.model_dir, "README.md")
    text = open(readme).read()
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        nxt = rest.find("\n## ")
        text = head + "\n".join(lines) + "\n" + (rest[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    with open(readme + ".tmp", "w") as f:
        f.write(text)
    os.replace(readme + ".tmp", readme)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
