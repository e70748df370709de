#!/usr/bin/env python3
"""Gradient fixtures for ortq's proof tests (issue 2, "Proof").

For each tiny Llama variant: the stock dynamo ONNX export of the base model (model.onnx), its
description (config.json), and, for target sets qv and all, PyTorch+PEFT references for one fixed
batch (ref_<set>.safetensors): loss, loss_sum, token_count, base logits, every LoRA parameter's
initial value, its gradient of the mean loss and its value after one AdamW step.

References are computed in float64 from the fp32 weights (so they are the exact values the fp32
graph approximates) and stored as fp32. Run: see README.md.
"""
import argparse
import copy
import json
import os
import shutil
import sys
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
GQA_TIED = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                rope=LLAMA3_ROPE, max_position_embeddings=128, rms_norm_eps=1e-5)
MASK_UNTIED = dict(GQA_TIED, num_key_value_heads=4, tie_word_embeddings=False,
                   rope={"rope_type": "default", "rope_theta": 10000.0})

VARIANTS = {
    "gqa_tied_llama3": dict(opset=20, inputs=["input_ids"], spec=GQA_TIED, lengths=[16, 16, 16]),
    "mask_untied": dict(opset=20, inputs=["input_ids", "attention_mask"], spec=MASK_UNTIED, lengths=[16, 11, 7]),
    "opset23_gqa": dict(opset=23, inputs=["input_ids", "attention_mask"], spec=GQA_TIED, lengths=[16, 11, 7]),
}
TARGETS = {
    "qv": ["q_proj", "v_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
LORA = dict(r=8, lora_alpha=32, lora_dropout=0.0)
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
BATCH, SEQ = 3, 16
MODEL_SEED, BATCH_SEED, LORA_SEED, NORM_SEED = 0, 1, 2, 3
PAD_ID = 0


def make_batch(vocab, lengths):
    g = torch.Generator().manual_seed(BATCH_SEED)
    ids = torch.randint(1, vocab, (BATCH, SEQ), generator=g, dtype=torch.int64)
    mask = torch.zeros(BATCH, SEQ, dtype=torch.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, PAD_ID))
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    return ids, mask, labels


def forward_loss(model, ids, mask, labels, use_mask):
    kw = dict(input_ids=ids, labels=labels, use_cache=False)
    if use_mask:
        kw["attention_mask"] = mask
    out = model(**kw)
    logits = out.logits
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1)
    loss_sum = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    count = (shift_labels != -100).sum()
    # HF's own loss (out.loss) upcasts logits with .float(), i.e. to fp32 even for a float64
    # model, so the reference loss is its definition evaluated in float64: sum / count.
    loss = loss_sum / count
    hf = out.loss.double()
    assert abs(hf.item() - loss.item()) <= 1e-5 * abs(loss.item()), ("HF loss differs", hf.item(), loss.item())
    return loss, loss_sum, count, logits


def peft_name(n):
    # named_parameters() carries the adapter name ("...lora_A.default.weight"); the PEFT
    # state-dict name (what adapters are saved under) drops it.
    return n.replace(".default.", ".")


def make_refs(base32, ids, mask, labels, use_mask, targets, log):
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    model = copy.deepcopy(base32)
    torch.manual_seed(LORA_SEED)
    cfg = LoraConfig(target_modules=targets, init_lora_weights=False, bias="none", task_type="CAUSAL_LM", **LORA)
    pm = get_peft_model(model, cfg)
    pm = pm.double()
    pm.train()  # dropout is 0.0, so train/eval give the same function
    params = [(peft_name(n), p) for n, p in pm.named_parameters() if p.requires_grad]
    sd_names = set(get_peft_model_state_dict(pm).keys())
    assert set(n for n, _ in params) == sd_names, (sorted(sd_names)[:4], [n for n, _ in params][:4])
    init = {n: p.detach().clone() for n, p in params}
    loss, loss_sum, count, _ = forward_loss(pm, ids, mask, labels, use_mask)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in params}
    opt = torch.optim.AdamW([p for _, p in params], foreach=False, **ADAMW)
    opt.step()
    step1 = {n: p.detach().clone() for n, p in params}
    out = {
        "loss": loss.detach().reshape(1),
        "loss_sum": loss_sum.detach().reshape(1),
        "token_count": count.to(torch.float64).reshape(1),
    }
    for n, _ in params:
        out[n] = init[n]
        out[n + ".grad"] = grads[n]
        out[n + ".step1"] = step1[n]
    gmax = max(g.abs().max().item() for g in grads.values())
    gmin_absmax = min(g.abs().max().item() for g in grads.values())
    log("    loss %.6f  tokens %d  params %d  max|grad| %.3e  smallest per-tensor max|grad| %.3e" % (
        loss.item(), int(count.item()), len(params), gmax, gmin_absmax))
    return out, [n for n, _ in params]


def strip_stack_traces(src, dst):
    import onnx
    m = onnx.load(src)
    for n in m.graph.node:
        keep = [p for p in n.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del n.metadata_props[:]
        n.metadata_props.extend(keep)
    onnx.save(m, dst)
    return os.path.getsize(dst)


def run_variant(name, v, outdir, scratch, log):
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM
    vdir = os.path.join(outdir, name)
    os.makedirs(vdir, exist_ok=True)
    cfg = common.llama_config(v["spec"])
    torch.manual_seed(MODEL_SEED)
    base = LlamaForCausalLM(cfg).float().eval()
    # HF initialises every RMSNorm weight to ones; a trained model's are not, and identical
    # all-ones norms would let a backward that forgets the norm's scale pass, and are merged
    # into one initializer by the exporter's optimizer. So: 1 + 0.1*N(0,1), seeded.
    g = torch.Generator().manual_seed(NORM_SEED)
    with torch.no_grad():
        for n, p in base.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
    rope = v["spec"]["rope"]
    want = common.expected_inv_freq(cfg.head_dim, rope)
    inv = getattr(getattr(base.model, "rotary_emb", None), "inv_freq", None)
    if inv is None:
        log("  WARNING: model.rotary_emb.inv_freq not found; rope scaling not verified")
    else:
        assert torch.allclose(inv.double(), want, rtol=1e-6), ("rope inv_freq mismatch", inv, want)
    log("  %s: attn=%s rope=%s tied=%s params=%d" % (name, cfg._attn_implementation, rope["rope_type"],
                                                     cfg.tie_word_embeddings, sum(p.numel() for p in base.parameters())))
    ids, mask, labels = make_batch(cfg.vocab_size, v["lengths"])
    use_mask = "attention_mask" in v["inputs"]

    # Stock export of the base model (before PEFT).
    onnx_path = os.path.join(vdir, "model.onnx")
    example = {"input_ids": ids, "attention_mask": mask}
    t0 = time.time()
    exp_info = common.export_onnx(copy.deepcopy(base), onnx_path, v["inputs"], example, v["opset"])
    desc = common.describe_onnx(onnx_path)
    log("    export %.1fs, %d bytes (initializers %d, stack_trace metadata %d), %d nodes" % (
        time.time() - t0, desc["file_bytes"], desc["initializer_bytes"], desc["stack_trace_metadata_bytes"], desc["node_count"]))
    log("    ops: " + " ".join(desc["ops"]))
    log("    inputs: %s outputs: %s" % (desc["inputs"], desc["outputs"]))
    nostack = strip_stack_traces(onnx_path, os.path.join(scratch, name + ".nostack.onnx"))
    log("    without stack_trace metadata: %d bytes" % nostack)
    checker = common.check_onnx(onnx_path)
    log("    onnx.checker: " + checker)

    # Base logits (no LoRA), float64.
    base64 = copy.deepcopy(base).double()
    with torch.no_grad():
        loss0, lsum0, cnt0, logits = forward_loss(base64, ids, mask, labels, use_mask)
        logits32 = base(input_ids=ids, attention_mask=mask if use_mask else None, use_cache=False).logits
    log("    base loss (no LoRA) %.6f; fp32 torch vs fp64 logits max|diff| %.2e" % (
        loss0.item(), (logits32.double() - logits).abs().max().item()))
    ref_check = None
    try:
        feeds = {"input_ids": ids.numpy()}
        if use_mask:
            feeds["attention_mask"] = mask.numpy()
        t0 = time.time()
        got = common.reference_run(onnx_path, feeds)
        diff = np.abs(got.astype(np.float64) - logits.numpy())
        real = mask.numpy().astype(bool)
        ref_check = {"max_abs_diff_all": float(diff.max()), "max_abs_diff_unpadded": float(diff[real].max()),
                     "max_abs_logit": float(np.abs(logits.numpy()).max()), "seconds": round(time.time() - t0, 1)}
        log("    onnx.reference vs torch fp64 logits: %s" % ref_check)
    except Exception as e:
        ref_check = {"error": "%s: %s" % (type(e).__name__, str(e)[:500])}
        log("    onnx.reference run failed: %s" % ref_check["error"])

    ref_files = {}
    for tname, targets in TARGETS.items():
        log("  %s / %s" % (name, tname))
        out, names = make_refs(base, ids, mask, labels, use_mask, targets, log)
        tensors = {"input_ids": ids, "attention_mask": mask, "labels": labels, "logits": logits}
        tensors.update(out)
        tensors = {k: (t.contiguous() if t.dtype == torch.int64 else t.to(torch.float32).contiguous()) for k, t in tensors.items()}
        meta = {"variant": name, "targets": ",".join(targets), "lora": json.dumps(LORA),
                "adamw": json.dumps(ADAMW), "seeds": json.dumps({"model": MODEL_SEED, "batch": BATCH_SEED, "lora": LORA_SEED, "norm": NORM_SEED}),
                "precision": "computed in float64 from the fp32 weights, stored as float32"}
        path = os.path.join(vdir, "ref_%s.safetensors" % tname)
        save_file(tensors, path + ".tmp", metadata=meta)
        os.replace(path + ".tmp", path)
        ref_files[tname] = {"file": os.path.basename(path), "targets": targets, "lora_parameters": names,
                            "loss": float(out["loss"].item()), "token_count": int(out["token_count"].item())}

    conf = {
        "variant": name,
        "hf_config": cfg.to_dict(),
        "export": {"exporter": "torch.onnx.export(dynamo=True)", "opset": v["opset"], "dtype": "float32",
                   "wrapper": "LogitsMasked" if use_mask else "LogitsOnly", "use_cache": False,
                   "external_data": False, **exp_info},
        "input_names": [i["name"] for i in desc["inputs"]],
        "output_name": desc["outputs"][0]["name"] if desc["outputs"] else None,
        "onnx": desc,
        "onnx_checker": checker,
        "onnx_reference_check": ref_check,
        "batch": {"batch": BATCH, "seq": SEQ, "lengths": v["lengths"], "pad_id": PAD_ID,
                  "padding": "right", "labels": "input_ids with -100 at padding"},
        "lora": dict(LORA, init_lora_weights=False, seed=LORA_SEED, scaling=LORA["lora_alpha"] / LORA["r"]),
        "adamw": ADAMW,
        "loss": "HF causal-LM: logits[:, :-1] vs labels[:, 1:], ignore_index -100, mean over counted tokens",
        "refs": ref_files,
        "base_loss_no_lora": float(loss0.item()),
        "seeds": {"model": MODEL_SEED, "batch": BATCH_SEED, "lora": LORA_SEED, "norm": NORM_SEED},
        "weights": "HF init (normal std initializer_range for linears/embedding), RMSNorm weights 1 + 0.1*N(0,1) (seed norm)",
        "versions": common.versions(),
    }
    common.write_json(os.path.join(vdir, "config.json"), conf)
    return desc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="testdata/llama")
    ap.add_argument("--scratch", default=".cache/fixtures-scratch")
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.scratch, exist_ok=True)
    logf = open(os.path.join(a.scratch, "fixtures.log"), "a")

    def log(s):
        print(s, flush=True)
        logf.write(s + "\n")
        logf.flush()
    log("versions: %s" % common.versions())
    status = {}
    for name, v in VARIANTS.items():
        if a.only and name not in a.only:
            continue
        try:
            run_variant(name, v, a.out, a.scratch, log)
            status[name] = "ok"
        except Exception as e:
            tb = traceback.format_exc()
            log("VARIANT %s FAILED:\n%s" % (name, tb))
            shutil.rmtree(os.path.join(a.out, name), ignore_errors=True)
            status[name] = "failed: %s: %s" % (type(e).__name__, str(e)[:3000])
    common.write_json(os.path.join(a.scratch, "status.json"), status)
    log("status: %s" % json.dumps(status, indent=1))
    return 0 if all(s == "ok" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
