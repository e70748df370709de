"""Generate PyTorch / Hugging Face reference values for the train package tests.

Run where torch and transformers are installed (e.g. the GPU machine; CPU
tensors are used throughout):

    python3 train/optim/testdata/gen_torch_refs.py > train/optim/testdata/torch_refs.json

Float32 values are stored as their IEEE bit patterns (uint32) so Go tests can
compare bit for bit.
"""
import json
import math
import struct
import sys

import torch
import transformers
from transformers import (get_constant_schedule_with_warmup,
                          get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)


def bits(t):
    return [int(x) for x in t.detach().contiguous().view(torch.int32).flatten().tolist()]


def u32(xs):
    return [x & 0xFFFFFFFF for x in xs]


def adamw_case(name, n, steps, lrs, wd, betas=(0.9, 0.999), eps=1e-8, seed=0, foreach=False):
    g = torch.Generator().manual_seed(seed)
    p0 = torch.randn(n, generator=g, dtype=torch.float32) * 0.5
    grads = [torch.randn(n, generator=g, dtype=torch.float32) * (10.0 ** (k - 2)) for k in range(steps)]
    p = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([p], lr=lrs[0], betas=betas, eps=eps, weight_decay=wd, foreach=foreach)
    out = {"name": name, "lr": lrs, "weight_decay": wd, "beta1": betas[0], "beta2": betas[1], "eps": eps,
           "param0": u32(bits(p0)), "grads": [u32(bits(x)) for x in grads], "params": [], "exp_avg": [], "exp_avg_sq": []}
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = lrs[k]
        p.grad = grads[k].clone()
        opt.step()
        st = opt.state[p]
        out["params"].append(u32(bits(p)))
        out["exp_avg"].append(u32(bits(st["exp_avg"])))
        out["exp_avg_sq"].append(u32(bits(st["exp_avg_sq"])))
    return out


def schedules():
    cases = []
    dummy = torch.nn.Parameter(torch.zeros(1))
    for kind, warmup, total in [("linear", 10, 100), ("linear", 0, 7), ("cosine", 10, 100), ("cosine", 0, 7),
                                ("constant", 5, 0), ("constant", 0, 0), ("linear", 3, 3), ("cosine", 4, 9)]:
        opt = torch.optim.SGD([dummy], lr=1.0)
        if kind == "linear":
            s = get_linear_schedule_with_warmup(opt, warmup, total)
        elif kind == "cosine":
            s = get_cosine_schedule_with_warmup(opt, warmup, total)
        else:
            s = get_constant_schedule_with_warmup(opt, warmup)
        f = s.lr_lambdas[0]
        steps = list(range(0, max(total, warmup) + 3))
        cases.append({"kind": kind, "warmup": warmup, "total": total, "steps": steps,
                      "values": [float(f(k)) for k in steps]})
    return cases


def halves():
    g = torch.Generator().manual_seed(1)
    rnd = torch.randint(-2**31, 2**31 - 1, (20000,), generator=g, dtype=torch.int64).to(torch.int32)
    x = rnd.view(torch.float32)
    # Add magnitudes around half's range and special values.
    scales = torch.logspace(-30, 6, 20000, base=2.0, dtype=torch.float64).to(torch.float32)
    signs = torch.where(torch.rand(20000, generator=g) < 0.5, -1.0, 1.0).to(torch.float32)
    y = scales * signs * (1 + torch.rand(20000, generator=g, dtype=torch.float32))
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 65504.0, 65519.99, 65520.0, 6.0e-8, 5.96e-8,
                            2.98e-8, 2.99e-8, 6.1035e-05, 1e-40, 3.4028235e38, 1.0009765625, 1.00048828125,
                            1.000732421875], dtype=torch.float32)
    x = torch.cat([x[~torch.isnan(x)], y, special])
    return {"inputs": u32(bits(x)),
            "f16": [int(v) & 0xFFFF for v in x.to(torch.float16).view(torch.int16).tolist()],
            "bf16": [int(v) & 0xFFFF for v in x.to(torch.bfloat16).view(torch.int16).tolist()]}


def scaler_case(init_scale, growth_interval, flags):
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.5)
    sc = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
    scales, params, unscaled = [], [], []
    for k, bad in enumerate(flags):
        opt.zero_grad()
        loss = (p * torch.tensor([1.0, 3.0, 0.1])).sum()
        sc.scale(loss).backward()
        if bad:
            p.grad[1] = float("inf")
        sc.unscale_(opt)
        unscaled.append(u32(bits(p.grad)))
        sc.step(opt)
        sc.update()
        scales.append(float(sc.get_scale()))
        params.append(u32(bits(p)))
    return {"init_scale": init_scale, "growth_interval": growth_interval, "flags": flags,
            "scales": scales, "params": params, "unscaled": unscaled}


def main():
    refs = {"torch": torch.__version__, "transformers": transformers.__version__}
    refs["adamw"] = [
        adamw_case("defaults", 37, 3, [1e-3] * 3, 0.01, seed=0),
        adamw_case("defaults_long", 1000, 3, [1e-3] * 3, 0.01, seed=1),
        adamw_case("schedule_lr_wd0.1", 37, 4, [0.0, 2e-4, 1e-1, 3e-3], 0.1, seed=2),
        adamw_case("no_decay_betas", 37, 3, [5e-2] * 3, 0.0, betas=(0.8, 0.95), eps=1e-6, seed=3),
    ]
    refs["adamw_foreach_equal_single"] = all(
        adamw_case("x", 1000, 3, [1e-3] * 3, 0.01, seed=1, foreach=True)["params"] ==
        adamw_case("x", 1000, 3, [1e-3] * 3, 0.01, seed=1, foreach=False)["params"] for _ in [0])
    refs["schedules"] = schedules()
    refs["halves"] = halves()
    refs["scaler"] = [
        scaler_case(65536.0, 2000, [False, True, False, True, True, False]),
        scaler_case(8.0, 3, [False, False, False, False, True, False, False, False, False]),
        scaler_case(3.0, 2000, [False, False]),
    ]
    json.dump(refs, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
