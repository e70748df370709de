"""Generate torch references for gradient clipping + AdamW (train/optim/clip_test.go).

Run where torch is installed (CPU tensors throughout):

    python3 train/optim/testdata/gen_clip_refs.py > train/optim/testdata/clip_refs.json

Each case is a few LoRA-like tensors trained for a few steps on fixed gradients:
torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False) (what Hugging Face
Trainer calls on CPU, where foreach kernels are not used), then torch.optim.AdamW
(foreach=False). The gradient scales alternate so that clipping triggers on some steps
and not on others. Float32 values are IEEE bit patterns (uint32).

The "peft" case starts from the PEFT LoRA tensors and gradients hfimport's tests use
(hfimport/testdata/hf/llama32/ref.safetensors: d loss_sum / d tensor, divided here by the
token count as a mean-loss trainer does), scaled per step; max_norm is half the first
step's norm so that it clips at scale 1 and not at scale 0.1. To keep the fixture small it
records the total norms and the first PEFT_KEEP values of each tensor after every step.
"""
import json
import sys

import torch
from safetensors.torch import load_file


def clip(params, max_norm):
    """clip_grad_norm_ with its per-tensor loop (foreach=False); torch before 2.0 has only that
    loop and no foreach argument."""
    try:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
    except TypeError:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

PEFT_REF = "hfimport/testdata/hf/llama32/ref.safetensors"
PEFT_KEEP = 4


def bits(t):
    return [int(x) & 0xFFFFFFFF for x in t.detach().contiguous().view(torch.int32).flatten().tolist()]


def clip_case(name, shapes, scales, max_norm, lr, wd, seed):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float32) * 0.1) for s in shapes]
    out = {"name": name, "max_norm": max_norm, "lr": lr, "weight_decay": wd,
           "param0": [bits(p) for p in params], "steps": []}
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, foreach=False)
    for scale in scales:
        grads = [torch.randn(s, generator=g, dtype=torch.float32) * scale for s in shapes]
        for p, x in zip(params, grads):
            p.grad = x.clone()
        norm = clip(params, max_norm)
        step = {"grads": [bits(x) for x in grads], "total_norm": bits(norm.reshape(1))[0],
                "clipped": [bits(p.grad) for p in params]}
        opt.step()
        step["params"] = [bits(p) for p in params]
        step["exp_avg"] = [bits(opt.state[p]["exp_avg"]) for p in params]
        step["exp_avg_sq"] = [bits(opt.state[p]["exp_avg_sq"]) for p in params]
        out["steps"].append(step)
    return out


def peft_case(scales):
    ref = load_file(PEFT_REF)
    names = sorted(k for k in ref if ".lora_" in k and not k.endswith(".grad"))
    tokens = ref["token_count"]
    params = [torch.nn.Parameter(ref[n].clone()) for n in names]
    mean_grads = [ref[n + ".grad"] / tokens for n in names]
    first = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in mean_grads]))
    max_norm = float(first) / 2
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=False)
    out = {"name": "peft llama32", "ref": PEFT_REF, "names": names, "max_norm": max_norm, "lr": 1e-3,
           "weight_decay": 0.01, "scales": scales, "keep": PEFT_KEEP, "steps": []}
    for scale in scales:
        for p, g in zip(params, mean_grads):
            p.grad = g * scale
        norm = clip(params, max_norm)
        opt.step()
        out["steps"].append({
            "total_norm": bits(norm.reshape(1))[0],
            "params": [bits(p.flatten()[:PEFT_KEEP]) for p in params],
            "exp_avg": [bits(opt.state[p]["exp_avg"].flatten()[:PEFT_KEEP]) for p in params],
            "exp_avg_sq": [bits(opt.state[p]["exp_avg_sq"].flatten()[:PEFT_KEEP]) for p in params],
        })
    return out


def main():
    refs = {"torch": torch.__version__, "cases": [
        # 23 values, norms ≈ 0.05, 24, 0.1, 4.8: clipped on steps 2 and 4 only.
        clip_case("max_norm 1", [(3, 4), (4, 2), (3,)], [0.01, 5.0, 0.02, 1.0], 1.0, 1e-3, 0.01, 0),
        # 14 values, norms ≈ 1.9, 0.02, 0.75: clipped on steps 1 and 3.
        clip_case("max_norm 0.3, no decay", [(4, 2), (2, 3)], [0.5, 0.005, 0.2], 0.3, 2e-2, 0.0, 1),
    ], "peft": peft_case([1.0, 0.1, 3.0])}
    json.dump(refs, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
