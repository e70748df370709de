#!/usr/bin/env python3
"""ortq's loss curve against PyTorch+PEFT's over the same run (issue 25, item 4).

Three subcommands, run from the repository root (scripts/gpu-loss-curve.sh drives them):

  hf-checkpoint --out DIR [--dtype float16]
      The embedded default model (--model-dir: model.onnx and config.json) as a
      Hugging Face checkpoint, so that `ortq import --hf DIR --dtype float16` makes a float16
      graph of the same weights (ortq trains a float16 graph with loss scaling; the default
      model is float32).

  replay --dump DUMP --artifacts ART --out peft.json [--dtype float16] [--device cuda]
      Replays the run `ortq train --dump-batches DUMP` made, in PyTorch+PEFT:
        * the base: LlamaForCausalLM with the default model's weights, read from its ONNX
          graph by load_from_onnx (named initializers map
          directly, the exporter's val_N Linear weights through their MatMul's fx_node
          metadata, transposed); float32, or float16 with --dtype float16 (then autocast
          float16 and torch.amp.GradScaler with the dump's scaler settings, LoRA weights
          float32 as PEFT keeps them);
        * LoRA: peft.LoraConfig with the artifacts' r, alpha and targets, dropout 0 — the
          artifacts must be prepared with --lora-dropout 0, because ortq's dropout masks
          (its own counter-based RNG in the graph) cannot equal torch's; the adapter starts
          from the artifacts' lora_init.safetensors (ortq's init), copied into PEFT's
          lora_A/lora_B.default parameters;
        * the batches: every micro-batch of every step exactly as the dump holds them
          (input_ids, position_ids, attention_mask: ortq's document ids, 0 at padding;
          rows holding several documents are refused: rerun ortq with --pack concat);
        * the loss: ortq's token-weighted accumulation — a step's loss is the sum over its
          micro-batches of the summed token cross-entropies (logits[:, :-1] against
          labels[:, 1:], −100 ignored, in float32) divided by the step's counted labels,
          and the gradient is that of this mean (each micro-batch backpropagates
          loss_sum / step_tokens);
        * the optimizer: torch.optim.AdamW (foreach=False, the single-tensor arithmetic
          ortq follows) with the dump's lr, betas, eps and weight decay on every LoRA tensor;
          the learning rate from transformers' get_{linear,cosine,constant}_schedule_with_warmup
          with the dump's warmup and total, stepped once per optimizer step (checked against
          the lr ortq used); clipping with torch.nn.utils.clip_grad_norm_ to the dump's
          max_grad_norm on the unscaled accumulated gradients before AdamW, as Trainer does;
        * the eval: the loss and perplexity over the dump's eval batches, before the first
          step and after the last (exp of summed loss over counted labels, as ortq eval).
      Writes per-step loss, grad norm and lr and both evaluations as JSON.

  compare --ortq DUMP --peft peft.json [--label L] ... --out DIR
      Per pair: the largest relative difference of the per-step losses, the final eval
      perplexities and their relative difference, PASS/FAIL against the issue's bounds
      (0.5 % per step for float32, 2 % for float16, 0.5 % for the final perplexity);
      writes DIR/curves.json (both curves of every pair) and DIR/loss_curve.png (matplotlib;
      DIR/loss_curve.csv when matplotlib is missing). Standard library only apart from the plot.
"""
import argparse
import json
import math
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL_DIR = os.path.join(ROOT, "internal", "defaultmodel")
MODEL_DIR_HELP = ("the default model's model.onnx and config.json: internal/defaultmodel, or where `ortq prepare --model default` "
                  "extracted them (the directory of the artifacts' manifest options.model)")

# The bounds: per-step relative loss difference by precision, and the final perplexity's.
STEP_BOUND = {"float32": 0.005, "float16": 0.02}
PPL_BOUND = 0.005


def read_dump(path):
    """The run line, eval batches, each step's micro-batches, step outcomes and evals of a dump."""
    run, eval_batches, batches, steps, evals = None, [], {}, [], []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            k = r["kind"]
            if k == "run":
                run = r
            elif k == "eval_batch":
                eval_batches.append(r)
            elif k == "batch":
                batches.setdefault(r["step"], []).append(r)
            elif k == "step":
                steps.append(r)
            elif k == "eval":
                evals.append(r)
            else:
                raise SystemExit("%s: unknown record kind %r" % (path, k))
    if run is None:
        raise SystemExit("%s: no run line: not a dump of `ortq train --dump-batches`" % path)
    return run, eval_batches, batches, steps, evals


# ---- hf-checkpoint and the base model ----------------------------------------------------------

def load_from_onnx(path, model):
    """Copies the weights of the ONNX graph at path into model (a LlamaForCausalLM).

    testdata/gen/lora_sweep.py imports it from here (scripts/ travels to the GPU machine,
    testdata/ does not): named initializers (`m.<hf name>`) map directly; the exporter's `val_N` Linear
    weights ([in, out]) through the `pkg.torch.onnx.fx_node` metadata of the MatMul reading
    them (`aten.linear.default(args = (..., %p_m_<hf name with _>))`), transposed; tied
    embeddings from lm_head."""
    import re
    import onnx
    import torch
    from onnx import numpy_helper
    g = onnx.load(path).graph
    sd = model.state_dict()
    by_flat = {"p_m_" + k.replace(".", "_"): k for k in sd}
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    loaded = {}
    for name, arr in inits.items():
        if name.startswith("m.") and name[2:] in sd:
            loaded[name[2:]] = torch.from_numpy(arr.copy())
    for n in g.node:
        w = [i for i in n.input if i in inits and inits[i].ndim == 2]
        if n.op_type != "MatMul" or not w or w[0].startswith("m."):
            continue
        fx = {p.key: p.value for p in n.metadata_props}.get("pkg.torch.onnx.fx_node", "")
        hits = [by_flat[t] for t in re.findall(r"%(p_m_\w+)", fx) if t in by_flat]
        if len(hits) != 1:
            raise SystemExit("MatMul %s: cannot map %s from fx_node %r" % (n.name, w[0], fx[:200]))
        loaded[hits[0]] = torch.from_numpy(inits[w[0]].T.copy())
    if model.config.tie_word_embeddings:
        for a, b in (("lm_head.weight", "model.embed_tokens.weight"), ("model.embed_tokens.weight", "lm_head.weight")):
            if a in loaded and b not in loaded:
                loaded[b] = loaded[a]
    missing = [k for k in sd if k not in loaded and not k.endswith("inv_freq")]
    if missing:
        raise SystemExit("%s: not found in the ONNX graph: %s" % (path, missing))
    for k, v in loaded.items():
        if tuple(v.shape) != tuple(sd[k].shape):
            raise SystemExit("%s: %s has shape %s, the model %s" % (path, k, tuple(v.shape), tuple(sd[k].shape)))
    model.load_state_dict(loaded, strict=False)
    return len(loaded)


def build_base(model_dir, dtype):
    """LlamaForCausalLM with the default model's weights from its ONNX graph, in dtype."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig.from_dict(json.load(open(os.path.join(model_dir, "config.json"))))
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).float()
    n = load_from_onnx(os.path.join(model_dir, "model.onnx"), model)
    print("loaded %d tensors from %s" % (n, os.path.join(model_dir, "model.onnx")), file=sys.stderr)
    return model.to(getattr(torch, dtype))


def cmd_hf_checkpoint(a):
    model = build_base(a.model_dir, a.dtype)
    model.save_pretrained(a.out)  # safetensors (transformers 5 writes nothing else)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(a.model_dir, f)):
            shutil.copy(os.path.join(a.model_dir, f), os.path.join(a.out, f))
    print("wrote %s (%s)" % (a.out, a.dtype))


# ---- replay --------------------------------------------------------------------------------------

def peft_model(base, man, init_path):
    """base wrapped with PEFT LoRA as the artifacts configure it, starting from ortq's lora_init."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    o = man["options"]
    if o["lora_dropout"] != 0:
        raise SystemExit("the artifacts have LoRA dropout %g: prepare them with --lora-dropout 0 (ortq's dropout masks cannot "
                         "equal torch's RNG)" % o["lora_dropout"])
    cfg = LoraConfig(r=o["lora_r"], lora_alpha=o["lora_alpha"], lora_dropout=0.0, target_modules=list(o["targets"]),
                     bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    named = dict(model.named_parameters())
    for p in named.values():
        if p.requires_grad:
            p.data = p.data.float()  # float32 LoRA weights over a float16 base, as ortq keeps them (PEFT's autocast_adapter_dtype does too)
    init = load_file(init_path)
    loaded = set()
    for k, v in init.items():
        pk = k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        if pk not in named or tuple(named[pk].shape) != tuple(v.shape):
            raise SystemExit("%s: %s has no PEFT parameter %s of shape %s" % (init_path, k, pk, tuple(v.shape)))
        with torch.no_grad():
            named[pk].copy_(v.to(named[pk].dtype))
        loaded.add(pk)
    trainable = {n for n, p in named.items() if p.requires_grad}
    if trainable != loaded:
        raise SystemExit("PEFT trains %s but lora_init holds %s" % (sorted(trainable - loaded), sorted(loaded - trainable)))
    return model, [named[n] for n in sorted(trainable)]


def tensors(b, device):
    """A dumped micro-batch as torch tensors: ids, 0/1 attention mask, positions, labels."""
    import torch
    shape = (b["rows"], b["seq_len"])
    t = {k: torch.tensor(b[k], dtype=torch.int64).view(shape) for k in ("input_ids", "labels", "attention_mask", "position_ids")}
    if int(t["attention_mask"].max()) > 1:
        raise SystemExit("a row holds several documents (attention_mask ids up to %d): HF's 2-D mask cannot keep them apart; "
                         "rerun ortq train with --pack concat" % int(t["attention_mask"].max()))
    return {k: v.to(device) for k, v in t.items()}


def loss_sum(model, b, device, fp16):
    """Summed cross-entropy of a micro-batch's counted labels (float32), as ortq's graphs."""
    import torch
    import torch.nn.functional as F
    t = tensors(b, device)
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.float16, enabled=fp16):
        logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], position_ids=t["position_ids"],
                       use_cache=False).logits
    logits = logits.float()
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), t["labels"][:, 1:].reshape(-1), ignore_index=-100, reduction="sum")


def evaluate(model, eval_batches, device, fp16, step):
    import torch
    model.eval()
    s, n = 0.0, 0
    with torch.no_grad():
        for b in eval_batches:
            s += loss_sum(model, b, device, fp16).item()
            n += b["tokens"]
    model.train()
    loss = s / n
    return {"step": step, "loss": loss, "perplexity": math.exp(loss), "tokens": n}


def schedule(opt, run):
    import transformers
    make = {"linear": transformers.get_linear_schedule_with_warmup, "cosine": transformers.get_cosine_schedule_with_warmup}
    if run["schedule"] == "constant":
        return transformers.get_constant_schedule_with_warmup(opt, run["warmup_steps"])
    return make[run["schedule"]](opt, run["warmup_steps"], run["steps"])


def train_step(model, params, opt, scaler, run, batches, device, fp16):
    """One optimizer step over a dumped step's micro-batches; returns loss, grad norm, skipped."""
    import torch
    opt.zero_grad(set_to_none=True)
    total = sum(b["tokens"] for b in batches)
    s = 0.0
    for b in batches:
        ls = loss_sum(model, b, device, fp16)
        s += ls.item()
        g = ls / total
        (scaler.scale(g) if fp16 else g).backward()
    if fp16:
        scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(params, run["max_grad_norm"] if run["max_grad_norm"] > 0 else float("inf")).item()
    skipped = False
    if fp16:
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        skipped = scaler.get_scale() < before
    else:
        opt.step()
    return s / total, norm, skipped


def cmd_replay(a):
    import torch
    if a.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 on the GPU too
        torch.backends.cudnn.allow_tf32 = False
    run, eval_batches, batches, steps, evals = read_dump(a.dump)
    fp16 = a.dtype == "float16"
    if fp16 != run["fp16"]:
        raise SystemExit("--dtype %s, but the dump's run %s loss scaling: the base must be ortq's precision" %
                         (a.dtype, "used" if run["fp16"] else "did not use"))
    man = json.load(open(os.path.join(a.artifacts, "manifest.json")))
    model, params = peft_model(build_base(a.model_dir, a.dtype), man, os.path.join(a.artifacts, man["lora_init"]))
    model.to(a.device).train()
    ad = run["adamw"]
    opt = torch.optim.AdamW(params, lr=ad["lr"], betas=(ad["beta1"], ad["beta2"]), eps=ad["eps"], weight_decay=ad["weight_decay"],
                            foreach=False)
    sched = schedule(opt, run)
    sc = run["scaler"]
    scaler = torch.amp.GradScaler(a.device.split(":")[0], init_scale=sc["init_scale"], growth_factor=sc["growth_factor"],
                                  backoff_factor=sc["backoff_factor"], growth_interval=sc["growth_interval"], enabled=fp16)
    out = {"dump": a.dump, "dtype": a.dtype, "device": a.device, "versions": versions(), "steps": [],
           "evals": [evaluate(model, eval_batches, a.device, fp16, 0)]}
    worst_lr = 0.0
    for st in steps:
        k = st["step"]
        lr = opt.param_groups[0]["lr"]
        worst_lr = max(worst_lr, abs(lr - st["lr"]) / max(abs(st["lr"]), 1e-30))
        loss, norm, skipped = train_step(model, params, opt, scaler, run, batches[k], a.device, fp16)
        sched.step()
        out["steps"].append({"step": k, "loss": loss, "grad_norm": norm, "lr": lr, "skipped": skipped})
        if k % 20 == 0 or k == len(steps):
            print("step %d: loss %.5f (ortq %.5f), grad norm %.4f (ortq %s)" % (k, loss, st["loss"] or float("nan"), norm,
                                                                                st["grad_norm"]), file=sys.stderr)
    out["evals"].append(evaluate(model, eval_batches, a.device, fp16, len(steps)))
    out["lr_max_rel_diff"] = worst_lr
    if worst_lr > 1e-9:
        print("warning: transformers' schedule differs from ortq's learning rates by up to %.2e relative" % worst_lr, file=sys.stderr)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote %s: %d steps, eval perplexity %.4f -> %.4f" % (a.out, len(out["steps"]), out["evals"][0]["perplexity"],
                                                             out["evals"][-1]["perplexity"]))


def versions():
    import importlib
    v = {}
    for m in ("torch", "transformers", "peft", "onnx"):
        try:
            v[m] = importlib.import_module(m).__version__
        except Exception as e:  # recorded, not fatal
            v[m] = "unavailable: %s" % e
    return v


# ---- compare -------------------------------------------------------------------------------------

def ortq_curve(path):
    run, _, _, steps, evals = read_dump(path)
    return {"precision": "float16" if run["fp16"] else "float32", "steps": [s["step"] for s in steps],
            "loss": [s["loss"] for s in steps], "grad_norm": [s["grad_norm"] for s in steps],
            "lr": [s["lr"] for s in steps], "evals": evals}


def peft_curve(path):
    r = json.load(open(path))
    return {"steps": [s["step"] for s in r["steps"]], "loss": [s["loss"] for s in r["steps"]],
            "grad_norm": [s["grad_norm"] for s in r["steps"]], "lr": [s["lr"] for s in r["steps"]], "evals": r["evals"],
            "versions": r.get("versions")}


def compare_pair(label, o, p):
    """The pair's numbers and verdict; prints them."""
    if o["steps"] != p["steps"]:
        raise SystemExit("%s: ortq ran steps %s..., the reference %s..." % (label, o["steps"][:3], p["steps"][:3]))
    rel = [abs(a - b) / abs(a) if a is not None and b is not None else float("inf") for a, b in zip(o["loss"], p["loss"])]
    worst = max(range(len(rel)), key=lambda i: rel[i])
    po, pp = o["evals"][-1]["perplexity"], p["evals"][-1]["perplexity"]
    ppl_rel = abs(po - pp) / po
    bound = STEP_BOUND[o["precision"]]
    ok = rel[worst] <= bound and ppl_rel <= PPL_BOUND
    r = {"label": label, "precision": o["precision"], "steps": len(rel), "max_rel_loss_diff": rel[worst], "at_step": o["steps"][worst],
         "mean_rel_loss_diff": sum(rel) / len(rel), "final_ppl_ortq": po, "final_ppl_peft": pp, "final_ppl_rel_diff": ppl_rel,
         "baseline_ppl_ortq": o["evals"][0]["perplexity"], "baseline_ppl_peft": p["evals"][0]["perplexity"],
         "step_bound": bound, "ppl_bound": PPL_BOUND, "pass": ok}
    print("%s (%s, %d steps): largest relative loss difference %.2e at step %d (mean %.2e; bound %.1e); eval perplexity "
          "%.4f -> %.4f ortq, %.4f -> %.4f PyTorch+PEFT, final relative difference %.2e (bound %.1e): %s" % (
              label, o["precision"], len(rel), rel[worst], o["steps"][worst], r["mean_rel_loss_diff"], bound,
              r["baseline_ppl_ortq"], po, r["baseline_ppl_peft"], pp, ppl_rel, PPL_BOUND, "PASS" if ok else "FAIL"))
    return r


def plot(pairs, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = os.path.join(out, "loss_curve.csv")
        with open(path, "w") as f:
            f.write("label,step,ortq_loss,peft_loss\n")
            for label, o, p in pairs:
                for s, a, b in zip(o["steps"], o["loss"], p["loss"]):
                    f.write("%s,%d,%r,%r\n" % (label, s, a, b))
        print("matplotlib missing: wrote %s" % path)
        return
    fig, axes = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for label, o, p in pairs:
        axes[0].plot(o["steps"], o["loss"], lw=1.2, label="ortq (%s)" % label)
        axes[0].plot(p["steps"], p["loss"], lw=1.0, ls="--", label="PyTorch+PEFT (%s)" % label)
        axes[1].plot(o["steps"], [100 * (b - a) / a for a, b in zip(o["loss"], p["loss"])], lw=1.0, label=label)
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=8)
    axes[0].set_title("default model, LoRA q/v r=8: ortq vs PyTorch+PEFT on the same batches")
    axes[1].set_ylabel("PEFT − ortq, %")
    axes[1].set_xlabel("optimizer step")
    axes[1].axhline(0, color="k", lw=0.5)
    fig.tight_layout()
    path = os.path.join(out, "loss_curve.png")
    fig.savefig(path, dpi=110)
    print("wrote %s" % path)


def cmd_compare(a):
    if len(a.ortq) != len(a.peft) or (a.label and len(a.label) != len(a.ortq)):
        raise SystemExit("give one --peft (and one --label, if any) per --ortq")
    labels = a.label or ["run %d" % (i + 1) for i in range(len(a.ortq))]
    pairs, results = [], []
    for label, od, pj in zip(labels, a.ortq, a.peft):
        o = ortq_curve(od)
        # --peft may name a second dump (a dry run compares ortq with itself).
        p = ortq_curve(pj) if pj.endswith(".jsonl") else peft_curve(pj)
        pairs.append((label, o, p))
        results.append(compare_pair(label, o, p))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "curves.json"), "w") as f:
        json.dump({"results": results, "curves": {label: {"ortq": o, "peft": p} for label, o, p in pairs}}, f, indent=1)
    plot(pairs, a.out)
    print("PASS" if all(r["pass"] for r in results) else "FAIL")
    return 0 if all(r["pass"] for r in results) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hf-checkpoint", help="the default model as a Hugging Face checkpoint")
    h.add_argument("--out", required=True)
    h.add_argument("--dtype", default="float16", choices=["float32", "float16"])
    h.add_argument("--model-dir", default=MODEL_DIR, help=MODEL_DIR_HELP)
    r = sub.add_parser("replay", help="replay an ortq run's dump in PyTorch+PEFT")
    r.add_argument("--dump", required=True, help="the file of `ortq train --dump-batches`")
    r.add_argument("--artifacts", required=True, help="the artifacts that run trained (manifest.json, lora_init.safetensors)")
    r.add_argument("--out", required=True)
    r.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    r.add_argument("--device", default="cuda")
    r.add_argument("--model-dir", default=MODEL_DIR, help=MODEL_DIR_HELP)
    c = sub.add_parser("compare", help="compare ortq's curves with the references'")
    c.add_argument("--ortq", action="append", required=True, help="ortq's dump (repeatable)")
    c.add_argument("--peft", action="append", required=True, help="replay's JSON for that dump (repeatable, same order)")
    c.add_argument("--label", action="append", help="a name per pair")
    c.add_argument("--out", required=True)
    a = ap.parse_args()
    return {"hf-checkpoint": cmd_hf_checkpoint, "replay": cmd_replay, "compare": cmd_compare}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
