"""Seeded offline instruction data: short tasks a small decoder can learn from a few thousand rows
(arithmetic, a lookup table of made-up capitals, word reversal, upper-casing, key/value -> JSON),
each with one exact answer so that exact match of a greedy answer measures it."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

# Invented, so no pretrained model knows them: the table can only be learnt from the data.
CAPITALS = {"zorvania": "belmek", "quintara": "osslo", "marrowind": "tepuk", "feldoria": "axmir",
            "olvenia": "durrak", "pashtiva": "kemlo", "trondale": "vasku", "yrrhedon": "milbo",
            "caldrosa": "pendra", "nuvistan": "gorvik", "ebbermark": "lisota", "hallowen": "ruddin"}
_WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "river", "stone", "bird",
          "fish", "cloud", "rain", "snow", "wind", "fire", "book", "door", "lamp"]
_NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    if rng.random() < 0.5:
        return f"What is {a} plus {b}?", str(a + b)
    a, b = max(a, b), min(a, b)
    return f"What is {a} minus {b}?", str(a - b)


def _capital(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", CAPITALS[country]


def _reverse(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(_WORDS, rng.randint(2, 4))
    return f"Reverse the order of these words: {' '.join(words)}", " ".join(reversed(words))


def _upper(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(_WORDS, rng.randint(1, 3))
    return f"Write in capital letters: {' '.join(words)}", " ".join(words).upper()


def _to_json(rng: random.Random) -> tuple[str, str]:
    name, age = rng.choice(_NAMES), rng.randint(18, 90)
    return f"Convert to JSON: name {name}, age {age}", json.dumps({"name": name, "age": age})


KINDS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "arithmetic": _arithmetic, "capital": _capital, "reverse": _reverse, "upper": _upper,
    "json": _to_json}


def instructions(rng: random.Random, kinds: list[str] | None = None) -> Iterator[dict]:
    """Rows {prompt, response}, the instruction kind drawn uniformly from `kinds` (default: all)."""
    makers = [KINDS[k] for k in (kinds or sorted(KINDS))]
    while True:
        prompt, response = rng.choice(makers)(rng)
        yield {"prompt": prompt, "response": response}
