"""The text the base model's tokenizer is trained on: shipped with the code, nothing is
downloaded.

A few hundred plain sentences, generated deterministically from a small vocabulary, and the
instruction format the pipeline uses (``repeat: a b c`` / ``answer: a b c``), so that every
word of the instruction data set is one token of the byte-level BPE vocabulary.
"""

from __future__ import annotations

import random

# The words of the instruction data set (each becomes a single token).
WORDS = (
    "red blue green apple river stone cloud tree bird fish moon star lamp door road song"
).split()

OPENINGS = (
    "the {a} is near the {b} .",
    "a {a} and a {b} and a {c} .",
    "we saw the {a} by the {b} under the {c} .",
    "there is no {a} without a {b} .",
    "my {a} is not your {b} .",
    "the {a} , the {b} and the {c} are here .",
    "where is the {a} ? it is under the {b} .",
    "please repeat the words {a} {b} {c} .",
    "the first is the {a} and the last is the {c} .",
    "repeat: {a} {b} {c}\nanswer: {a} {b} {c}",
    "first: {a} {b} {c}\nanswer: {a}",
    "last: {a} {b} {c}\nanswer: {c}",
)

PARAGRAPH = (
    "This corpus trains the tokenizer of a very small language model. The model is made "
    "here, on the machine, from nothing but this text and a random seed, so that the "
    "pipeline can train, serve, judge and load-test a real adapter without downloading "
    "anything. A question is followed by an answer. The answer is short and exact. If the "
    "answer is not known, say so: I do not know. Sorry, I cannot answer that.\n"
)


def sentences(count: int = 1200, seed: int = 0) -> list[str]:
    """``count`` sentences, the same ones for the same seed."""
    rng = random.Random(seed)
    found = [PARAGRAPH]
    for _ in range(count):
        a, b, c = rng.sample(WORDS, 3)
        found.append(rng.choice(OPENINGS).format(a=a, b=b, c=c))
    return found
