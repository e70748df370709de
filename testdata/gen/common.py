"""Helpers shared by make_fixtures.py and make_default_model.py (run where torch, transformers,
peft and onnx are installed, e.g. the GPU machine; see README.md)."""
import collections
import json
import os

import numpy as np
import torch


def versions():
    import importlib
    out = {}
    for name in ("torch", "transformers", "peft", "onnx", "onnxscript", "tokenizers", "safetensors", "numpy"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as e:  # recorded, not fatal: the report says what was missing
            out[name] = "unavailable: %s" % e
    return out


def llama_config(spec):
    """Builds a LlamaConfig from spec, whose "rope" entry is a transformers-5 style
    rope_parameters dict (rope_type, rope_theta, and the scaling fields). Falls back to the v4
    keywords (rope_theta + rope_scaling) if this transformers does not take rope_parameters."""
    from transformers import LlamaConfig
    kw = dict(spec)
    rope = dict(kw.pop("rope"))
    try:
        cfg = LlamaConfig(**kw, rope_parameters=rope, attn_implementation="sdpa")
    except TypeError:
        theta = rope.pop("rope_theta")
        scaling = rope if rope.get("rope_type", "default") != "default" else None
        cfg = LlamaConfig(**kw, rope_theta=theta, rope_scaling=scaling, attn_implementation="sdpa")
    return cfg


def expected_inv_freq(head_dim, rope):
    """Reference inverse frequencies (transformers' default and llama3 rules, written out here so
    the fixture proves the scaling really reached the model)."""
    import math
    base = rope["rope_theta"]
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if rope.get("rope_type", "default") == "default":
        return inv
    assert rope["rope_type"] == "llama3"
    factor, lo, hi, old = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"], rope["original_max_position_embeddings"]
    low_wl, high_wl = old / lo, old / hi
    wl = 2 * math.pi / inv
    out = torch.where(wl > low_wl, inv / factor, inv)
    smooth = (old / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    mid = (wl >= high_wl) & (wl <= low_wl)
    return torch.where(mid, smoothed, out)


class LogitsOnly(torch.nn.Module):
    """Export wrapper: input_ids only, logits out (use_cache=False). The attribute is named `m`
    so module paths in the ONNX metadata read `m.model.layers.0...`."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m(input_ids=input_ids, use_cache=False).logits


class LogitsMasked(torch.nn.Module):
    """Export wrapper: input_ids + attention_mask, logits out (use_cache=False)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def export_onnx(model, path, input_names, example, opset):
    """Stock dynamo export, fp32, dynamic batch and sequence axes, weights inline."""
    from torch.export import Dim
    model = model.eval()
    wrapper = LogitsMasked(model) if "attention_mask" in input_names else LogitsOnly(model)
    wrapper.eval()
    args = tuple(example[n] for n in input_names)
    batch, seq = Dim("batch", min=1, max=4096), Dim("seq", min=2, max=model.config.max_position_embeddings)
    shapes = {n: {0: batch, 1: seq} for n in input_names}
    tried = []
    for dyn in (shapes, {n: {0: Dim.AUTO, 1: Dim.AUTO} for n in input_names}):
        try:
            prog = torch.onnx.export(wrapper, args, dynamo=True, opset_version=opset,
                                     input_names=list(input_names), output_names=["logits"],
                                     dynamic_shapes=dyn, external_data=False)
            prog.save(path, external_data=False)
            return {"dynamic_shapes": "named Dim batch/seq" if dyn is shapes else "Dim.AUTO", "fallback_errors": tried}
        except Exception as e:  # the named-Dim form can trip a constraint check; AUTO is the fallback
            tried.append("%s: %s" % (type(e).__name__, str(e)[:2000]))
    raise RuntimeError("export failed: " + " | ".join(tried))


def describe_onnx(path):
    """Op list, inputs/outputs with symbolic dims, initializers, metadata keys, sizes."""
    import onnx
    m = onnx.load(path)
    g = m.graph
    ops = collections.Counter()
    meta_keys = collections.Counter()
    stack_bytes = 0
    for n in g.node:
        ops[(n.domain + "::" if n.domain not in ("", "ai.onnx") else "") + n.op_type] += 1
        for p in n.metadata_props:
            meta_keys[p.key] += 1
            if p.key == "pkg.torch.onnx.stack_trace":
                stack_bytes += len(p.value.encode())
    for f in m.functions:
        for n in f.node:
            ops[(n.domain + "::" if n.domain not in ("", "ai.onnx") else "") + n.op_type + " (in function %s)" % f.name] += 1

    def vi(v):
        t = v.type.tensor_type
        return {"name": v.name, "elem_type": onnx.TensorProto.DataType.Name(t.elem_type),
                "shape": [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]}
    inits = [{"name": t.name, "dims": list(t.dims), "dtype": onnx.TensorProto.DataType.Name(t.data_type)} for t in g.initializer]
    return {
        "opset_import": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
        "ir_version": m.ir_version,
        "producer": "%s %s" % (m.producer_name, m.producer_version),
        "inputs": [vi(v) for v in g.input],
        "outputs": [vi(v) for v in g.output],
        "ops": sorted(ops),
        "op_counts": dict(sorted(ops.items())),
        "node_count": len(g.node),
        "functions": [f.name for f in m.functions],
        "initializers": inits,
        "node_metadata_keys": dict(meta_keys),
        "file_bytes": os.path.getsize(path),
        "stack_trace_metadata_bytes": stack_bytes,
        "initializer_bytes": sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                                 for t in g.initializer),
    }


def check_onnx(path):
    import onnx
    try:
        onnx.checker.check_model(onnx.load(path), full_check=True)
        return "ok (full_check)"
    except Exception as e:
        return "FAILED: %s: %s" % (type(e).__name__, str(e)[:1000])


def reference_run(path, feeds):
    """Runs the graph with onnx.reference (no onnxruntime on that machine); returns logits or raises."""
    from onnx.reference import ReferenceEvaluator
    sess = ReferenceEvaluator(path)
    return sess.run(None, feeds)[0]


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)
