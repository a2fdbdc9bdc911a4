"""The SQuAD splits the QA benches train and score on, cut by article from
../shared/data/squad_v1.1_part (its README: train on articles 0-29, score on 30-39, so no context
scored was seen in training), written as nested SQuAD JSON files tunelab reads as they are.

    python bench/squad_split.py ../shared/data/squad_v1.1_part/articles_00-39.json OUT \
        train=0:30:2000 validation=30:35:400 test=35:40:400

Each split is `name=first:last:questions`: articles first..last-1, their first `questions`
questions in article order (0: all of them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad_v1.1_part"


def first_questions(articles: list[dict], limit: int | None) -> list[dict]:
    """The articles cut to their first `limit` questions in order (None: all), empty ones dropped."""
    kept, left = [], limit
    for article in articles:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = paragraph["qas"][:left] if left is not None else paragraph["qas"]
            if qas:
                paragraphs.append({**paragraph, "qas": qas})
            if left is not None:
                left -= len(qas)
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
    return kept


def write_splits(out: Path, splits: dict[str, tuple[int, int, int]],
                 source: Path = SQUAD / "articles_00-39.json") -> dict[str, Path]:
    """One `<name>.json` per split: (first article, end article, questions; 0 = all)."""
    articles = json.loads(source.read_text())["data"]
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, (first, end, questions) in splits.items():
        files[name] = out / f"{name}.json"
        files[name].write_text(json.dumps(
            {"version": "1.1", "data": first_questions(articles[first:end], questions or None)}))
    return files


def main(argv: list[str]) -> None:
    source, out, *specs = argv
    splits = {}
    for spec in specs:
        name, _, bounds = spec.partition("=")
        first, end, questions = (int(x) for x in bounds.split(":"))
        splits[name] = (first, end, questions)
    for name, path in write_splits(Path(out), splits, Path(source)).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
