"""Seeded generators of offline task data: learnable, but with negation, contrast and label noise
so that a model has something to learn beyond keyword lookup.

Each generator yields rows with canonical keys; `sources` writes them under the user's column names.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

_SUBJECTS = ["the movie", "the service", "this phone", "the food", "our stay", "the battery",
             "the staff", "the app", "the delivery", "the plot", "the hotel", "the concert"]
_POSITIVE = ["great", "wonderful", "excellent", "delightful", "superb", "fantastic", "pleasant",
             "impressive", "lovely", "brilliant", "charming", "reliable"]
_NEGATIVE = ["terrible", "awful", "disappointing", "dreadful", "poor", "horrible", "boring",
             "frustrating", "mediocre", "broken", "rude", "useless"]
_NEUTRAL = ["ordinary", "average", "as described", "on schedule", "standard", "typical",
            "unremarkable", "the usual", "fairly normal", "what we expected", "plain", "routine"]
_ADVERBS = ["", "", "really ", "quite ", "truly ", "rather ", "so "]
_FRAMES = ["{s} was {a}.", "honestly, {s} is {a}", "i thought {s} was {a}.",
           "in my opinion {s} was {a}", "{s} turned out {a}!", "we found {s} {a}."]

SENTIMENT_LABELS = {2: ["negative", "positive"], 3: ["negative", "neutral", "positive"]}


def sentiment(rng: random.Random, num_classes: int = 2, noise: float = 0.04) -> Iterator[dict]:
    """Sentences whose sentiment follows their last clause; `not` flips polar adjectives."""
    labels = SENTIMENT_LABELS[num_classes]
    words = {"negative": _NEGATIVE, "positive": _POSITIVE, "neutral": _NEUTRAL}
    flip = {"negative": "positive", "positive": "negative", "neutral": "neutral"}
    while True:
        label = rng.choice(labels)
        shown = flip[label] if rng.random() < 0.25 else label
        adjective = rng.choice(words[shown])
        if shown != label:
            adjective = f"not {adjective}"
        text = rng.choice(_FRAMES).format(s=rng.choice(_SUBJECTS),
                                          a=rng.choice(_ADVERBS) + adjective)
        if rng.random() < 0.3:
            other = rng.choice([x for x in labels if x != label])
            lead = rng.choice(_FRAMES).format(s=rng.choice(_SUBJECTS), a=rng.choice(words[other]))
            text = f"{lead.rstrip('.!')}, but {text}"
        if rng.random() < noise:
            label = rng.choice(labels)
        yield {"text": text, "label": label}


GENERATORS: dict[str, Callable[..., Iterator[dict]]] = {"sentiment": sentiment}


def generate(task_name: str, size: int, seed: int, **params) -> list[dict]:
    """`size` rows of the named task's generator, reproducible from `seed`."""
    if task_name not in GENERATORS:
        raise KeyError(task_name)
    rows = GENERATORS[task_name](random.Random(seed), **params)
    return [next(rows) for _ in range(size)]


def params_for(task) -> dict:
    """The generator arguments a task config asks for."""
    if task.name == "sentiment":
        return {"num_classes": task.num_classes or 2}
    return {}


def column_map(kind: str, data) -> dict[str, str]:
    """Canonical generator keys -> the column names the user configured."""
    if kind == "classification":
        return {"text": data.text_column, "label": data.label_column}
    return {}
