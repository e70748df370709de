"""bitsandbytes' own NF4/FP4 quantization of a fixed weight, for quantize's TestAgainstBitsandbytes.

Run on a machine with torch and bitsandbytes (CUDA if available, else bitsandbytes' CPU
backend):  python3 quantize/testdata/gen/bnb4_fixture.py OUT.json
The weight is 8x64 values w[i] = float32(sin(0.37*i) * 0.05 * (1 + i % 7)), the same
expression TestAgainstBitsandbytes evaluates in Go. For each of nf4 and fp4, with and
without compress_statistics (double quantization), blocksize 64: the packed bytes (hex), the
absmax (float32) or, double-quantized, the 8-bit codes (hex), the nested scales, offset and
the 256-entry dynamic map bitsandbytes used.
"""
import json
import math
import sys

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F

N, K, BS = 8, 64, 64
w = torch.tensor([math.sin(i * 0.37) * 0.05 * (1 + i % 7) for i in range(N * K)], dtype=torch.float32).reshape(N, K)
dev = "cuda" if torch.cuda.is_available() else "cpu"
out = {"bitsandbytes": bnb.__version__, "device": dev, "n": N, "k": K, "block_size": BS}
for qt in ("nf4", "fp4"):
    for dq in (False, True):
        packed, st = F.quantize_4bit(w.to(dev), blocksize=BS, compress_statistics=dq, quant_type=qt)
        rec = {"packed": bytes(packed.flatten().cpu().tolist()).hex()}
        if dq:
            rec["codes"] = bytes(st.absmax.flatten().cpu().tolist()).hex()
            rec["scales"] = st.state2.absmax.float().cpu().tolist()
            rec["offset"] = float(st.offset)
            rec["dynamic_map"] = st.state2.code.float().cpu().tolist()
        else:
            rec["absmax"] = st.absmax.float().cpu().tolist()
        out[f"{qt}/double={str(dq).lower()}"] = rec
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)
