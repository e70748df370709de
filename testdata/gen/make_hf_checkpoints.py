"""Tiny Hugging Face Llama checkpoints + reference logits for hfimport's tests (issue 4).

Run where torch + transformers (+ peft, safetensors) exist, i.e. the GPU machine (CPU only is
used here), from the repository root:

    python3 testdata/gen/make_hf_checkpoints.py [--out hfimport/testdata/hf]

For every variant it writes `<out>/<variant>/` with what `save_pretrained` writes (config.json,
generation_config.json, model.safetensors or model-0000N-of-0000M.safetensors + index) and
`ref.safetensors` with a fixed right-padded batch and the model's logits:

    input_ids, attention_mask  int64 [3, 10]  (lengths 10, 7, 4; pad id 0, mask 0)
    logits                     f32 [3, 10, vocab]  computed in float64 from the saved weights
    logits_fp32                f32 [3, 10, vocab]  transformers' own fp32 forward (eager attention)

and, for `llama32` only, a PEFT reference (LoRA r=4, alpha=8, q_proj+v_proj, dropout 0,
init_lora_weights=False so B != 0, seed 2): the LoRA tensors under PEFT's state-dict names,
`labels` (input_ids, -100 at padding), `loss_sum` / `token_count` (HF causal-LM loss summed over
counted tokens, float64) and `<name>.grad` = d loss_sum / d tensor.

Weights: HF init (seed 0) with the RMSNorm weights set to 1 + 0.1 N(0,1) and biases to
0.1 N(0,1) (seed 3), so a dropped norm scale or bias shows up in the logits. Sizes are tiny
(hidden 32, 2 layers, vocab 128) so all variants stay well under 1 MB.
"""
import argparse
import importlib
import json
import os
import shutil
import sys

import torch

VOCAB, HIDDEN, INTER, LAYERS = 128, 32, 64, 2

VARIANTS = {
    # Llama 2 style: MHA, default rope, untied, fp32.
    "llama2": dict(heads=4, kv=4, head_dim=None, tied=False, rope={"rope_type": "default", "rope_theta": 10000.0},
                   eps=1e-5, bias=False, dtype="float32", shard=None),
    # Llama 3.2 style: GQA 2:1, head_dim 16 from config (q_proj is 32 -> 64), tied embeddings,
    # llama3 rope scaling whose smoothing band contains one frequency (original 64: band [16, 64]).
    "llama32": dict(heads=4, kv=2, head_dim=16, tied=True,
                    rope={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                    eps=1e-5, bias=False, dtype="float32", shard=None),
    # Linear rope scaling + attention_bias + mlp_bias, GQA, untied.
    "linear_bias": dict(heads=4, kv=2, head_dim=None, tied=False,
                        rope={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
                        eps=1e-6, bias=True, dtype="float32", shard=None),
    # Sharded: GQA 4:1, tied, default rope, several shards + model.safetensors.index.json.
    "sharded": dict(heads=4, kv=1, head_dim=None, tied=True, rope={"rope_type": "default", "rope_theta": 10000.0},
                    eps=1e-5, bias=False, dtype="float32", shard="40KB"),
    # bf16 weights on disk (llama3 rope, GQA, untied).
    "bf16": dict(heads=4, kv=2, head_dim=None, tied=False,
                 rope={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                 eps=1e-5, bias=False, dtype="bfloat16", shard=None),
}


def versions():
    out = {}
    for name in ("torch", "transformers", "peft", "safetensors"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as e:  # recorded, not fatal
            out[name] = "unavailable: %s" % e
    return out


def make_config(v):
    from transformers import LlamaConfig
    kw = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
              num_attention_heads=v["heads"], num_key_value_heads=v["kv"], rms_norm_eps=v["eps"],
              max_position_embeddings=128, tie_word_embeddings=v["tied"], attention_bias=v["bias"],
              mlp_bias=v["bias"], hidden_act="silu", initializer_range=0.02,
              bos_token_id=1, eos_token_id=2, pad_token_id=None)
    if v["head_dim"] is not None:
        kw["head_dim"] = v["head_dim"]
    rope = dict(v["rope"])
    try:  # transformers 5: rope_parameters
        cfg = LlamaConfig(**kw, rope_parameters=rope)
    except TypeError:  # transformers 4: rope_theta + rope_scaling
        theta = rope.pop("rope_theta")
        cfg = LlamaConfig(**kw, rope_theta=theta, rope_scaling=rope if rope["rope_type"] != "default" else None)
    cfg._attn_implementation = "eager"
    return cfg


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 10), generator=g, dtype=torch.int64)
    mask = torch.ones(3, 10, dtype=torch.int64)
    for row, n in enumerate((10, 7, 4)):
        mask[row, n:] = 0
        ids[row, n:] = 0
    return ids, mask


def forward(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def peft_reference(model64, ids, mask):
    """LoRA gradients of the summed causal-LM loss, float64."""
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(2)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    pm = get_peft_model(model64, cfg)
    pm = pm.double()
    with torch.no_grad():  # the stored float32 values are exactly the ones differentiated
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(p.float().double())
    labels = ids.clone()
    labels[mask == 0] = -100
    logits = pm(input_ids=ids, attention_mask=mask, use_cache=False).logits
    sl = logits[:, :-1].reshape(-1, logits.shape[-1])
    tl = labels[:, 1:].reshape(-1)
    loss_sum = torch.nn.functional.cross_entropy(sl, tl, ignore_index=-100, reduction="sum")
    loss_sum.backward()
    out = {"labels": labels, "loss_sum": loss_sum.detach().reshape(1).float(),
           "token_count": (tl != -100).sum().reshape(1).float()}
    for name, p in pm.named_parameters():
        if "lora_" in name:
            peft_name = name.replace(".default", "")
            out[peft_name] = p.detach().float().contiguous()
            out[peft_name + ".grad"] = p.grad.detach().float().contiguous()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="hfimport/testdata/hf")
    args = ap.parse_args()
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    torch.set_num_threads(4)
    vers = versions()
    print("versions", json.dumps(vers))
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    ids, mask = batch()
    summary = {}
    for name, v in VARIANTS.items():
        d = os.path.join(args.out, name)
        torch.manual_seed(0)
        cfg = make_config(v)
        model = LlamaForCausalLM(cfg).eval()
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("norm.weight"):
                    p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
                elif pname.endswith(".bias"):
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
        if v["dtype"] == "bfloat16":
            model = model.to(torch.bfloat16)
        kw = {"max_shard_size": v["shard"]} if v["shard"] else {}
        model.save_pretrained(d, **kw)
        # References from what was saved: reload, upcast (bf16 -> exact in fp32/fp64).
        m32 = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        m64 = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").double().eval()
        l32 = forward(m32, ids, mask)
        l64 = forward(m64, ids, mask)
        valid = mask.bool()
        diff = (l32.double() - l64)[valid].abs().max().item()
        assert diff < 1e-4, (name, diff)
        ref = {"input_ids": ids, "attention_mask": mask, "logits": l64.float().contiguous(),
               "logits_fp32": l32.float().contiguous()}
        if name == "llama32":
            ref.update(peft_reference(m64, ids, mask))
        meta = {"variant": name, "spec": json.dumps(v), "versions": json.dumps(vers),
                "batch": "ids uniform [3,128) seed 1, right padding lengths 10,7,4, pad id 0",
                "lora": "r=4 alpha=8 q_proj,v_proj dropout 0 init_lora_weights=False seed 2; grads of loss_sum"}
        save_file({k: t.contiguous() for k, t in ref.items()}, os.path.join(d, "ref.safetensors"), metadata=meta)
        files = sorted(os.listdir(d))
        summary[name] = {"files": files, "fp32_vs_fp64": diff, "config": json.load(open(os.path.join(d, "config.json")))}
        print(name, files, "fp32 vs fp64 max diff %.3g" % diff)
    print(json.dumps(summary["llama32"]["config"], indent=1))
    print(json.dumps(summary["linear_bias"]["config"].get("rope_parameters") or summary["linear_bias"]["config"].get("rope_scaling")))
    with open(os.path.join(args.out, "README.json"), "w") as f:
        json.dump({"generator": "testdata/gen/make_hf_checkpoints.py", "versions": vers,
                   "variants": {k: {"spec": VARIANTS[k], "files": s["files"], "fp32_vs_fp64": s["fp32_vs_fp64"]}
                                for k, s in summary.items()}}, f, indent=1)
    total = 0
    for root, _, fs in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, x)) for x in fs)
    print("total bytes", total)


if __name__ == "__main__":
    sys.exit(main())
