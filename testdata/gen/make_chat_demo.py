#!/usr/bin/env python3
"""Writes testdata/chat-demo.jsonl, the instruction-tuning data of `make demo`: short chat
conversations ({"messages": [...]}) about opposites, plurals, days, months and numbers, with
answers in one fixed sentence pattern per kind of question, so that the default model learns
the answer format within a few dozen CPU steps (the completion loss falls visibly). Plain
English words the default tokenizer knows. Deterministic (seed 7).

Usage: python3 testdata/gen/make_chat_demo.py > testdata/chat-demo.jsonl
"""
import json
import random

OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("old", "new"), ("fast", "slow"),
             ("early", "late"), ("light", "dark"), ("open", "closed"), ("high", "low"), ("rich", "poor"),
             ("strong", "weak"), ("happy", "sad"), ("long", "short"), ("hard", "soft"), ("wet", "dry"),
             ("first", "last"), ("good", "bad"), ("near", "far"), ("full", "empty"), ("young", "old"),
             ("true", "false"), ("clean", "dirty"), ("north", "south"), ("east", "west"), ("day", "night")]
PLURALS = [("cat", "cats"), ("dog", "dogs"), ("house", "houses"), ("child", "children"), ("man", "men"),
           ("woman", "women"), ("city", "cities"), ("box", "boxes"), ("book", "books"), ("tree", "trees"),
           ("mouse", "mice"), ("foot", "feet"), ("tooth", "teeth"), ("church", "churches"), ("story", "stories"),
           ("family", "families"), ("river", "rivers"), ("road", "roads"), ("letter", "letters"), ("party", "parties")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
SYSTEMS = ["You are a helpful assistant.", "Answer in one short sentence.", "You are a careful teacher."]


def qa_pairs():
    out = []
    for a, b in OPPOSITES:
        out.append(("What is the opposite of %s?" % a, "The opposite of %s is %s." % (a, b)))
        out.append(("What is the opposite of %s?" % b, "The opposite of %s is %s." % (b, a)))
    for a, b in PLURALS:
        out.append(("What is the plural of %s?" % a, "The plural of %s is %s." % (a, b)))
    for seq in (DAYS, MONTHS):
        for i, a in enumerate(seq):
            b = seq[(i + 1) % len(seq)]
            out.append(("What comes after %s?" % a, "%s comes after %s." % (b, a)))
    for i, a in enumerate(NUMBERS[:-1]):
        b = NUMBERS[i + 1]
        out.append(("What number comes after %s?" % a, "The number after %s is %s." % (a, b)))
    return out


def main():
    rng = random.Random(7)
    pairs = qa_pairs()
    rng.shuffle(pairs)
    i = 0
    while i < len(pairs):
        msgs = []
        if rng.random() < 0.3:
            msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
        turns = 2 if rng.random() < 0.3 and i + 1 < len(pairs) else 1
        for q, a in pairs[i:i + turns]:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        i += turns
        print(json.dumps({"messages": msgs}))


if __name__ == "__main__":
    main()
