#!/usr/bin/env python3
"""One line about the first point of an `ortq bench` report or a peer's (bench/peer/*.py) JSON,
for the GPU scripts' summaries: step p50 and mean over the steps counted, peak GPU memory,
tokens/s, and on request the memory breakdown, the first losses and the notes.

  point.py REPORT.json [--memory] [--losses N] [--notes]

Python 3 standard library only.
"""
import argparse, json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--memory", action="store_true", help="the memory breakdown, GiB")
    ap.add_argument("--losses", type=int, default=0, help="the first N losses")
    ap.add_argument("--notes", action="store_true")
    a = ap.parse_args()
    d = json.load(open(a.report))
    p = d["points"][0] if "points" in d else d
    st = p["step_time"]
    out = [f"{st['p50_ms']:.1f} ms p50 over {st.get('count', '?')} steps, mean {st.get('mean_ms', 0):.1f}",
           f"peak {p.get('peak_gpu_bytes', 0) / 2**30:.3f} GiB", f"{p.get('tokens_per_second', 0):.0f} tokens/s"]
    if a.memory:
        out.append(str({k: round(v / 2**30, 3) for k, v in (p.get("memory_breakdown") or {}).items()}))
    if a.losses:
        out.append(f"losses {[round(x, 4) for x in p.get('losses', [])[:a.losses]]}")
    if a.notes:
        out.append(f"notes {p.get('notes')}")
    print("; ".join(out))


if __name__ == "__main__":
    main()
