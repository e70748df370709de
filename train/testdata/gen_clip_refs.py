"""Generate torch references for gradient clipping + AdamW (train/clip_test.go).

Run where torch is installed (CPU tensors throughout):

    python3 train/testdata/gen_clip_refs.py > train/testdata/clip_refs.json

Each case is a few LoRA-like tensors trained for a few steps on fixed gradients:
torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False) (what Hugging Face
Trainer calls on CPU, where foreach kernels are not used), then torch.optim.AdamW
(foreach=False). The gradient scales alternate so that clipping triggers on some steps
and not on others. Float32 values are IEEE bit patterns (uint32).
"""
import json
import sys

import torch


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
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
        step = {"grads": [bits(x) for x in grads], "total_norm": bits(norm.reshape(1))[0],
                "clipped": [bits(p.grad) for p in params]}
        opt.step()
        step["params"] = [bits(p) for p in params]
        step["exp_avg"] = [bits(opt.state[p]["exp_avg"]) for p in params]
        step["exp_avg_sq"] = [bits(opt.state[p]["exp_avg_sq"]) for p in params]
        out["steps"].append(step)
    return out


def main():
    refs = {"torch": torch.__version__, "cases": [
        # norms ≈ 0.07, 34, 0.14, 7: clipped on steps 2 and 4 only.
        clip_case("max_norm 1", [(4, 6), (6, 3), (5,)], [0.01, 5.0, 0.02, 1.0], 1.0, 1e-3, 0.01, 0),
        # norms ≈ 2.7, 0.03, 1.1: clipped on steps 1 and 3.
        clip_case("max_norm 0.3, no decay", [(8, 2), (2, 7)], [0.5, 0.005, 0.2], 0.3, 2e-2, 0.0, 1),
    ]}
    json.dump(refs, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
