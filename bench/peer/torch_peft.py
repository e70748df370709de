#!/usr/bin/env python3
"""PyTorch + PEFT peer of `ortq bench`: the same LoRA fine-tuning workload, measured the same way,
written as the same JSON schema (ortq-bench/1) so `ortq bench --peer FILE.json` puts it beside
ortq's rows with ortq/peer ratios.

Workload (issue 3): Llama-3.2-3B shape (28 layers, hidden 3072, 24 heads / 8 KV heads, FFN 8192,
vocab 128256, tied embeddings, rope theta 500000 with llama3 scaling), random weights in fp16;
LoRA r=8 alpha=32 dropout 0.1 on q_proj,v_proj with fp32 adapter weights; autocast fp16 +
GradScaler; SDPA attention; gradient checkpointing on (--recompute layer) or off (none); AdamW;
one micro-batch per optimizer step; --warmup steps excluded, --steps measured.

    python3 bench/peer/torch_peft.py --micro-batch 7 --seq-len 512 --recompute layer --out peer.json
    ortq bench --preset llama-3.2-3b --device cuda --micro-batch 7 --peer peer.json --out bench-out

Memory: torch.cuda.max_memory_allocated / max_memory_reserved, and, when pynvml
(nvidia-ml-py) is importable, NVML sampled every 10 ms like ortq does (this process's used
memory, or the device's used memory minus what it was before CUDA started) — the figure
compared with ortq's. --bits 4 quantizes the decoder Linears to bitsandbytes NF4 (QLoRA);
without bitsandbytes it prints a note and writes nothing.
"""

import argparse
import datetime
import json
import math
import os
import platform
import resource
import socket
import sys
import threading
import time

SCHEMA = "ortq-bench/1"

# meta-llama/Llama-3.2-3B config.json (the fields LlamaConfig reads); hfimport's preset is the same.
PRESETS = {
    "llama-3.2-3b": dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                         num_attention_heads=24, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
                         tie_word_embeddings=True, max_position_embeddings=131072, rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
                         tie_word_embeddings=True, max_position_embeddings=131072, rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
    "llama-3.1-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, max_position_embeddings=131072, rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
}

# Dense fp16 tensor-core peaks (NVIDIA data sheets), matched like bench/flops.go: specific names first.
PEAKS = [(("h100", "pcie"), "H100 PCIe", 756e12), (("h100", "nvl"), "H100 NVL", 835e12),
         (("h100",), "H100 SXM", 989e12), (("h200",), "H200", 989e12), (("a100",), "A100", 312e12)]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama-3.2-3b", choices=sorted(PRESETS))
    p.add_argument("--config", help="Hugging Face config.json to use instead of --preset")
    p.add_argument("--layers", type=int, default=0, help="keep only the first N decoder layers (0: all)")
    p.add_argument("--micro-batch", type=int, default=7)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--recompute", choices=["layer", "none"], default="layer", help="gradient checkpointing per decoder layer")
    p.add_argument("--bits", type=int, choices=[4, 16], default=16, help="16: fp16 base (LoRA); 4: bitsandbytes NF4 base (QLoRA)")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--targets", default="q_proj,v_proj")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--eval-batches", type=int, default=0, help="eval perplexity on N held-out batches before and after")
    p.add_argument("--device", default="cuda")
    p.add_argument("--peak-flops", type=float, default=0, help="dense fp16 peak for MFU (0: from the GPU name)")
    p.add_argument("--sample-ms", type=float, default=10)
    p.add_argument("--out", default="peer.json")
    return p.parse_args()


class NVMLMonitor:
    """Samples this process's GPU memory (or device used minus a baseline) on a thread."""

    def __init__(self, index, interval):
        import pynvml  # nvidia-ml-py
        self.nv = pynvml
        pynvml.nvmlInit()
        self.h = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.pid = os.getpid()
        self.baseline = pynvml.nvmlDeviceGetMemoryInfo(self.h).used  # before CUDA starts
        self.interval = interval
        self.proc_peak, self.proc_seen, self.dev_peak = 0, False, 0
        self.counting = False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        nv = self.nv
        used = nv.nvmlDeviceGetMemoryInfo(self.h).used
        proc = None
        try:
            for p in nv.nvmlDeviceGetComputeRunningProcesses(self.h):
                if p.pid == self.pid and p.usedGpuMemory is not None:
                    proc = (proc or 0) + p.usedGpuMemory
        except nv.NVMLError:
            pass
        if self.counting:
            self.dev_peak = max(self.dev_peak, used)
            if proc is not None:
                self.proc_seen, self.proc_peak = True, max(self.proc_peak, proc)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self):
        self.counting = True
        self.sample()
        self._t.start()

    def stop(self):
        self.sample()
        self._stop.set()
        self._t.join()
        if self.proc_seen:
            return self.proc_peak, "nvml-process"
        return max(0, self.dev_peak - self.baseline), "nvml-device-delta"


def percentile(xs, q):
    """NumPy's default (linear) percentile."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100.0
    f = math.floor(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def duration_stats(ms):
    return dict(count=len(ms), mean_ms=sum(ms) / len(ms), p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95),
                min_ms=min(ms), max_ms=max(ms))


def flops(cfg, rows, seq, r, targets, recompute):
    """bench/flops.go's formula: model = 4NT + 6PT + 3A (frozen base), recompute adds a decoder forward."""
    h, i, v, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = dict(q_proj=(h, q), k_proj=(h, kv), v_proj=(h, kv), o_proj=(q, h), gate_proj=(h, i), up_proj=(h, i), down_proj=(i, h))
    head = h * v
    N = L * sum(a * b for a, b in shapes.values()) + head
    P = L * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)
    T, S = rows * seq, seq
    A = 2 * L * T * S * q
    model = 4 * N * T + 6 * P * T + 3 * A
    hw = model + (2 * (N - head) * T + 2 * P * T + A if recompute else 0)
    return dict(linear_params=N, lm_head_params=head, lora_params=P, layers=L, attn_width=q,
                model_per_step=float(model), hardware_per_step=float(hw))


class Synthetic:
    """ortq's synthetic stream (bench/tokens.go) in torch: each token is, with probability 1/2, a fixed
    random successor of the previous one, else uniform. Not bit-identical to ortq's (different RNG),
    the same distribution."""

    def __init__(self, torch, vocab, seed, stream, device):
        self.torch, self.vocab, self.device = torch, vocab, device
        g = torch.Generator().manual_seed(seed)
        self.succ = torch.randperm(vocab, generator=g)
        self.g = torch.Generator().manual_seed(seed * 1000003 + stream + 1)

    def batch(self, rows, seq):
        t = self.torch
        ids = t.empty(rows, seq, dtype=t.long)
        ids[:, 0] = t.randint(self.vocab, (rows,), generator=self.g)
        follow = t.rand(rows, seq, generator=self.g) < 0.5
        uni = t.randint(self.vocab, (rows, seq), generator=self.g)
        for c in range(1, seq):
            ids[:, c] = t.where(follow[:, c], self.succ[ids[:, c - 1]], uni[:, c])
        return ids.to(self.device)


def machine(torch, dev_index):
    m = dict(hostname=socket.gethostname(), os=" ".join([platform.system(), platform.release()]),
             threads=os.cpu_count(), go="")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    m["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        m["host_memory"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(dict(index=i, name=p.name, memory=p.total_memory))
    m["gpus"] = gpus
    m["runtime"] = "torch %s (CUDA %s)" % (torch.__version__, torch.version.cuda)
    extra = {}
    for mod in ("transformers", "peft", "bitsandbytes"):
        try:
            extra[mod] = __import__(mod).__version__
        except Exception:
            pass
    m["extra"] = extra
    try:
        import pynvml
        pynvml.nvmlInit()
        d = pynvml.nvmlSystemGetDriverVersion()
        m["gpu_driver"] = d.decode() if isinstance(d, bytes) else d
    except Exception:
        pass
    m.pop("go")
    return m


def main():
    a = parse_args()
    notes = []
    dev_index = int(a.device.split(":", 1)[1]) if ":" in a.device else 0

    # NVML first: its baseline must be taken before this process creates a CUDA context.
    mon = None
    try:
        mon = NVMLMonitor(dev_index, a.sample_ms / 1000.0)
    except Exception as e:  # pynvml missing or no driver
        notes.append("GPU memory by NVML not measured (%s): the peak compared is torch's reserved" % e)

    if a.bits == 4:
        try:
            import bitsandbytes as bnb  # noqa: F401
        except Exception as e:
            print("note: --bits 4 needs bitsandbytes, which is not importable here (%s): skipped, nothing written" % e, file=sys.stderr)
            return 0

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from peft import LoraConfig, get_peft_model

    if a.config:
        with open(a.config) as f:
            cfg = json.load(f)
    else:
        cfg = dict(PRESETS[a.preset])
    if a.layers > 0:
        cfg["num_hidden_layers"] = a.layers
    torch.manual_seed(a.seed)
    import transformers
    v5 = int(transformers.__version__.split(".")[0]) >= 5
    kw = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if v5 and "rope_parameters" not in kw:
        # transformers 5 spells rope_theta + rope_scaling as one rope_parameters dict.
        rp = dict(kw.pop("rope_scaling", None) or {"rope_type": "default"})
        rp["rope_theta"] = kw.pop("rope_theta", 10000.0)
        kw["rope_parameters"] = rp
    config = LlamaConfig(**kw)
    config.use_cache = False
    device = torch.device(a.device)
    dtype_kw = {"dtype" if v5 else "torch_dtype": torch.float16}
    with device:
        model = LlamaForCausalLM._from_config(config, attn_implementation=a.attn, **dtype_kw)
    model.requires_grad_(False)
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]

    if a.bits == 4:
        import bitsandbytes as bnb
        # Decoder Linears to NF4 (lm_head stays 16-bit, as ortq keeps it): the QLoRA base.
        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name, lin in list(parent.named_children()):
                    if isinstance(lin, torch.nn.Linear):
                        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                              compute_dtype=torch.float16, quant_type="nf4", device="cpu")
                        q.weight = bnb.nn.Params4bit(lin.weight.data.cpu(), requires_grad=False, quant_type="nf4")
                        setattr(parent, name, q.to(device))
                        del lin
        torch.cuda.empty_cache()

    lcfg = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # fp32 LoRA master weights (PEFT's autocast_adapter_dtype does the same)
    if a.recompute == "layer":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay)
    scaler = torch.amp.GradScaler("cuda")

    vocab = cfg["vocab_size"]
    train_stream = Synthetic(torch, vocab, a.seed, 1, device)
    eval_stream = Synthetic(torch, vocab, a.seed, 2, device)
    eval_set = [eval_stream.batch(a.micro_batch, a.seq_len) for _ in range(a.eval_batches)]
    batches = [train_stream.batch(a.micro_batch, a.seq_len) for _ in range(a.warmup + a.steps)]

    def evaluate(step):
        model.eval()
        s, n = 0.0, 0
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            for ids in eval_set:
                out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
                k = ids.numel() - ids.shape[0]
                s, n = s + float(out.loss) * k, n + k
        model.train()
        loss = s / n
        return dict(step=step, loss=loss, perplexity=math.exp(loss) if loss < 700 else None, tokens=n)

    point = dict(label="", params=dict(micro_batch=a.micro_batch, seq_len=a.seq_len, bits=a.bits, recompute=a.recompute,
                                       targets=targets),
                 device=a.device, precision="float16", warmup=a.warmup, steps=a.steps,
                 tokens_per_step=a.micro_batch * a.seq_len)
    if eval_set:
        point["eval"] = dict(batches=len(eval_set), before=evaluate(0))

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    if mon:
        mon.start()
    times, losses, skipped = [], [], 0
    for i, ids in enumerate(batches):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        scaler.scale(loss).backward()
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if scaler.get_scale() < before:
            skipped += 1
        losses.append(float(loss))
        if i >= a.warmup:
            times.append(dt * 1000)
    if mon:
        peak, source = mon.stop()
        point["peak_gpu_bytes"], point["gpu_source"] = peak, source
        point["peak_gpu_device_bytes"] = mon.dev_peak
    point["peak_gpu_allocated_bytes"] = torch.cuda.max_memory_allocated()
    point["peak_gpu_reserved_bytes"] = torch.cuda.max_memory_reserved()
    point["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    notes.append("peak host RSS is the process's lifetime peak (ru_maxrss), model construction included")
    if eval_set:
        point["eval"]["after"] = evaluate(len(batches))

    secs = sum(times) / 1000
    point["step_time"] = duration_stats(times)
    point["tokens_per_second"] = point["tokens_per_step"] * len(times) / secs
    point["skipped_steps"] = skipped
    point["losses"] = [x if math.isfinite(x) else None for x in losses]
    f = flops(cfg, a.micro_batch, a.seq_len, a.lora_r, targets, a.recompute == "layer")
    point["flops"] = f
    name = torch.cuda.get_device_name(device)
    peak = a.peak_flops
    if not peak:
        for match, row, v in PEAKS:
            if all(m in name.lower() for m in match):
                peak = v
                notes.append("MFU against %.0f TFLOP/s (%s dense fp16 peak)" % (v / 1e12, row))
                break
    per_step = secs / len(times)
    point["peak_flops"] = peak or None
    point["mfu"] = f["model_per_step"] / per_step / peak if peak else None
    point["hfu"] = f["hardware_per_step"] / per_step / peak if peak else None
    point["label"] = "mb=%d seq=%d bits=%d recompute=%s targets=%s" % (a.micro_batch, a.seq_len, a.bits, a.recompute, ",".join(targets))
    if a.attn != "sdpa":
        notes.append("attention: %s" % a.attn)

    result = dict(schema=SCHEMA, tool="torch+peft" + (" (bnb nf4)" if a.bits == 4 else ""),
                  created_at=datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                  machine=machine(torch, dev_index), config=vars(a), reference_ms=None, points=[point], notes=notes)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, a.out)
    print("%s: %.0f tokens/s, step p50 %.1f ms, peak allocated %.2f GiB, reserved %.2f GiB%s -> %s" % (
        point["label"], point["tokens_per_second"], point["step_time"]["p50_ms"],
        point["peak_gpu_allocated_bytes"] / 2**30, point["peak_gpu_reserved_bytes"] / 2**30,
        (", NVML %.2f GiB (%s)" % (point["peak_gpu_bytes"] / 2**30, point["gpu_source"])) if "peak_gpu_bytes" in point else "",
        a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
