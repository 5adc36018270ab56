"""Prompts for checking attribution methods: copy tasks whose answer is known, and a mixed prompt set.

A copy task plants a random word W once ("The password is W. Remember it well. The password is")
and asks for W: the only context token that carries W's identity is its earlier mention, so a method
that attributes the copied token should rank that mention first. The words are drawn from the
model's own vocabulary (single tokens: a leading space and 4-9 lowercase letters), so every
tokenizer gets a task of the same shape.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COPY_TEMPLATE = "The password is{w}. Remember it well. The password is"

# Several kinds, as used by benchmarks/reagent.py: factual recall, agreement, lists, copying, syntax.
MIXED_PROMPTS = (
    "The Eiffel Tower is located in the city of",
    "The capital of Germany is the city of",
    "Water freezes at a temperature of zero degrees",
    "The first president of the United States was George",
    "The keys to the old wooden cabinet",
    "The author of the books about the wizard",
    "Monday, Tuesday, Wednesday, Thursday,",
    "one, two, three, four,",
    "January, February, March, April,",
    "My name is Anna and I live in Paris. My name is",
    "The code word is orange. Repeat the code word:",
    "Alice gave the book to Bob. Then Bob gave the book back to",
    "When Mary and John went to the store, John gave a drink to",
    "She opened the door and walked into the",
    "The cat sat on the",
    "To make tea, first boil the",
    "The opposite of hot is",
    "Two plus two equals",
    "The sun rises in the east and sets in the",
    "Bread is made from flour, water and",
    "The doctor told the patient that she",
    "In 1492, Columbus sailed across the Atlantic",
)


@dataclass(frozen=True)
class CopyTask:
    """One copy task: ``prompt`` -> ``target`` (the word, one token), whose earlier mention is at
    ``answer_position`` among the prompt's tokens (counted without BOS)."""

    word: str
    prompt: str
    target: str
    answer_position: int


def copy_words(tokenizer, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct random words (with their leading space) that are one token each in ``tokenizer``."""
    vocab = sorted(tok for tok in tokenizer.get_vocab())
    words = []
    for tok in vocab:
        text = tokenizer.convert_tokens_to_string([tok])
        core = text[1:]
        if text.startswith(" ") and 4 <= len(core) <= 9 and core.isascii() and core.isalpha() and core.islower():
            if tokenizer(text, add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids(tok)]:
                words.append(text)
    words = sorted(set(words))
    if len(words) < n:
        raise ValueError(f"the tokenizer has only {len(words)} single-token lowercase words, {n} asked for")
    return random.Random(seed).sample(words, n)


def copy_tasks(model, n: int = 50, seed: int = 0) -> list[CopyTask]:
    """``n`` copy tasks with random single-token words of ``model``'s vocabulary (same seed: same words)."""
    tasks = []
    for w in copy_words(model.tokenizer, n, seed):
        prompt = COPY_TEMPLATE.format(w=w)
        ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        word_id = model.tokenizer(w, add_special_tokens=False)["input_ids"][0]
        tasks.append(CopyTask(w, prompt, w, ids.index(word_id)))
    return tasks
