"""Data sources: generated data is learnable but not trivial, user files of every format train with
their own columns, tokenization is cached, bad input names the file, column and what would work."""

from __future__ import annotations

import collections
import os

import pandas as pd
import pytest

from tunelab.config import ConfigError, check_config
from tunelab.data import TuneDataModule, load_splits, task_data_for, synthetic
from tunelab.models import load_tokenizer


def test_generated_sentiment_is_balanced_and_needs_more_than_keywords():
    rows = synthetic.generate("sentiment", 4000, seed=0, num_classes=2)
    counts = collections.Counter(r["label"] for r in rows)
    assert max(counts.values()) / len(rows) <= 0.60
    # A keyword rule (any positive word -> positive) must leave room to learn: negation and contrast.
    positive = set(synthetic._POSITIVE)
    keyword = sum((any(w.strip(".,!") in positive for w in r["text"].split())) ==
                  (r["label"] == "positive") for r in rows) / len(rows)
    assert 0.6 < keyword < 0.85
    three = collections.Counter(r["label"] for r in synthetic.generate("sentiment", 3000, 1,
                                                                       num_classes=3))
    assert set(three) == {"negative", "neutral", "positive"}
    assert max(three.values()) / 3000 <= 0.60


def test_generated_data_is_seeded():
    assert synthetic.generate("sentiment", 50, 3) == synthetic.generate("sentiment", 50, 3)
    assert synthetic.generate("sentiment", 50, 3) != synthetic.generate("sentiment", 50, 4)


def _write(frame: pd.DataFrame, path):
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_local_files_with_user_columns(suffix, tiny_cfg, tmp_path):
    rows = synthetic.generate("sentiment", 60, 0)
    frame = pd.DataFrame({"sentence": [r["text"] for r in rows],
                          "y": [int(r["label"] == "positive") for r in rows]})
    _write(frame[:40], tmp_path / f"train{suffix}")
    _write(frame[40:], tmp_path / f"dev{suffix}")
    cfg = check_config(tiny_cfg(f"data.train_file={tmp_path / f'train{suffix}'}",
                                f"data.validation_file={tmp_path / f'dev{suffix}'}",
                                "data.text_column=sentence", "data.label_column=y"))
    raw = load_splits(cfg.data, cfg.task, tmp_path / "cache")
    task_data = task_data_for(raw, cfg.data, cfg.task)
    assert len(raw.splits["train"]) == 40 and len(raw.splits["validation"]) == 20
    assert task_data.label_names == ["0", "1"]
    assert "test" not in raw.splits


def test_validation_is_held_out_of_train_when_not_given(tiny_cfg, tmp_path):
    rows = synthetic.generate("sentiment", 100, 0)
    pd.DataFrame(rows).to_csv(tmp_path / "all.csv", index=False)
    cfg = check_config(tiny_cfg(f"data.train_file={tmp_path / 'all.csv'}"))
    raw = load_splits(cfg.data, cfg.task, tmp_path / "cache")
    assert (len(raw.splits["train"]), len(raw.splits["validation"])) == (90, 10)


def _bad(tiny_cfg, tmp_path, *overrides):
    cfg = check_config(tiny_cfg(*overrides))
    raw = load_splits(cfg.data, cfg.task, tmp_path / "cache")
    return task_data_for(raw, cfg.data, cfg.task)


def test_bad_files_name_key_value_and_what_would_work(tiny_cfg, tmp_path):
    rows = synthetic.generate("sentiment", 30, 0)
    pd.DataFrame(rows).to_csv(tmp_path / "ok.csv", index=False)
    (tmp_path / "empty.csv").write_text("text,label\n")
    (tmp_path / "data.xlsx").write_text("x")
    pd.DataFrame([{"text": "fine", "label": "meh"}]).to_csv(tmp_path / "unseen.csv", index=False)

    with pytest.raises(ConfigError, match="an existing file") as err:
        _bad(tiny_cfg, tmp_path, f"data.train_file={tmp_path / 'missing.csv'}")
    assert err.value.key == "data.train_file"
    with pytest.raises(ConfigError, match=r"\['text', 'label'\]") as err:
        _bad(tiny_cfg, tmp_path, f"data.train_file={tmp_path / 'ok.csv'}",
             "data.text_column=sentence")
    assert err.value.key == "data.text_column" and err.value.value == "sentence"
    with pytest.raises(ConfigError, match="empty") as err:
        _bad(tiny_cfg, tmp_path, f"data.train_file={tmp_path / 'ok.csv'}",
             f"data.validation_file={tmp_path / 'empty.csv'}")
    assert err.value.key == "data.validation_file"
    with pytest.raises(ConfigError, match=r"\.parquet"):
        _bad(tiny_cfg, tmp_path, f"data.train_file={tmp_path / 'data.xlsx'}")
    with pytest.raises(ConfigError, match="row 0 .* 'meh', unseen in train"):
        _bad(tiny_cfg, tmp_path, f"data.train_file={tmp_path / 'ok.csv'}",
             f"data.validation_file={tmp_path / 'unseen.csv'}")


def test_tokenization_is_cached_across_runs(tiny_cfg, tmp_path):
    cfg = check_config(tiny_cfg())
    tokenizer = load_tokenizer(cfg.model)

    def prepared():
        raw = load_splits(cfg.data, cfg.task, tmp_path / "cache")
        dm = TuneDataModule(raw, task_data_for(raw, cfg.data, cfg.task), tokenizer,
                            max_length=32, batch_size=8, num_workers=0, cache_dir=tmp_path / "cache")
        dm.prepare_data()
        return dm

    first = prepared()
    files = {s: ds.cache_files[0]["filename"] for s, ds in first.encoded.items()}
    stamps = {s: os.stat(f).st_mtime_ns for s, f in files.items()}
    second = prepared()
    assert first.cache_key() == second.cache_key()
    for split, ds in second.encoded.items():
        assert ds.cache_files[0]["filename"] == files[split]
        assert os.stat(files[split]).st_mtime_ns == stamps[split], "re-tokenized"
    batch = next(iter(second.train_dataloader()))
    lengths = batch["attention_mask"].sum(-1)
    assert batch["input_ids"].shape[1] == int(lengths.max()), "batches pad to their longest row"
