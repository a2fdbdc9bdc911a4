"""Data sources: generated data is learnable but not trivial, user files of every format train with
their own columns, tokenization is cached, bad input names the file, column and what would work."""

from __future__ import annotations

import collections
import os
import types

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from tunelab import build
from tunelab.config import ConfigError, check_config
from tunelab.data import TuneDataModule, synthetic


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
    inputs = build.build_data(cfg)
    raw, task_data = inputs.raw, inputs.task_data
    assert len(raw.splits["train"]) == 40 and len(raw.splits["validation"]) == 20
    assert task_data.label_names == ["0", "1"]
    assert "test" not in raw.splits


def test_validation_is_held_out_of_train_when_not_given(tiny_cfg, tmp_path):
    rows = synthetic.generate("sentiment", 100, 0)
    pd.DataFrame(rows).to_csv(tmp_path / "all.csv", index=False)
    cfg = check_config(tiny_cfg(f"data.train_file={tmp_path / 'all.csv'}"))
    raw = build.build_data(cfg).raw
    assert (len(raw.splits["train"]), len(raw.splits["validation"])) == (90, 10)


def _bad(tiny_cfg, tmp_path, *overrides):
    return build.build_data(check_config(tiny_cfg(*overrides))).task_data


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
    tokenizer = build.build_tokenizer(cfg)

    def prepared():
        dm = build.build_datamodule(cfg, build.build_data(cfg), tokenizer, batch_size=8)
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


def test_tokenization_cache_follows_the_rows_each_split_holds(tiny_cfg, tmp_path):
    """Same file, other rows (a sample limit, another held-out fraction): tokenized anew, never
    the cached splits of a run that read the same file with other settings."""
    pd.DataFrame({"text": [f"row {i} " + "word " * (i % 7) for i in range(60)],
                  "label": ["a", "b", "c"] * 20}).to_csv(tmp_path / "all.csv", index=False)

    def sizes(*overrides):
        cfg = check_config(tiny_cfg(f"data.train_file={tmp_path / 'all.csv'}", *overrides))
        inputs = build.build_data(cfg)
        raw = inputs.raw
        dm = build.build_datamodule(cfg, inputs, build.build_tokenizer(cfg), batch_size=8)
        dm.prepare_data()
        assert {s: len(ds) for s, ds in dm.encoded.items()} == \
            {s: len(ds) for s, ds in raw.splits.items()}
        return {s: len(ds) for s, ds in dm.encoded.items()}

    assert sizes() == {"train": 54, "validation": 6}
    assert sizes("data.validation_fraction=0.5") == {"train": 30, "validation": 30}
    assert sizes("data.max_train_samples=10", "data.max_eval_samples=4") == \
        {"train": 10, "validation": 4}
    assert sizes() == {"train": 54, "validation": 6}


def _datamodule(cfg, tmp_path, **data_keys) -> TuneDataModule:
    """The run's datamodule (build_datamodule) in batches of 8, with `data_keys` set in data."""
    cfg = OmegaConf.merge(check_config(cfg), {"data": data_keys})
    dm = build.build_datamodule(cfg, build.build_data(cfg), build.build_tokenizer(cfg),
                                batch_size=8)
    dm.setup()
    return dm


@pytest.mark.parametrize("task", ["task=sentiment", "task=qa", "task=instruct", "task=lm",
                                  "task.head=generate"])
def test_padding_max_length_pads_every_task_to_max_length(task, tiny_cfg, tmp_path):
    model = "model=tiny-bert" if task in ("task=sentiment", "task=qa") else "model=tiny-llama"
    cfg = tiny_cfg(model, task, "data.synthetic.train_size=32", "data.synthetic.eval_size=8",
                   "data.max_length=112", "data.padding=max_length")
    dm = _datamodule(cfg, tmp_path, padding="max_length")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        assert batch["input_ids"].shape[1] == 112
        assert all(v.shape[1] == 112 for k, v in batch.items()
                   if k in ("attention_mask", "labels", "offset_mapping") and v.dim() > 1), \
            {k: tuple(v.shape) for k, v in batch.items()}
        assert int(batch["attention_mask"].sum(-1).min()) < 112, "some rows themselves are shorter"


def _varied_lengths_csv(path, rows: int = 400, seed: int = 0):
    import random

    rng = random.Random(seed)
    words = ["card", "transfer", "payment", "account", "pending", "refund", "top", "up", "fee"]
    frame = pd.DataFrame({"text": [" ".join(rng.choices(words, k=rng.randint(2, 60)))
                                   for _ in range(rows)],
                          "label": [rng.choice(["a", "b"]) for _ in range(rows)]})
    frame.to_csv(path, index=False)
    return path


def _pad_fraction(loader) -> float:
    pad = total = 0
    for batch in loader:
        mask = batch["attention_mask"]
        pad, total = pad + int((mask == 0).sum()), total + mask.numel()
    return pad / total


def test_group_by_length_pads_less_than_random_batches(tiny_cfg, tmp_path):
    train = _varied_lengths_csv(tmp_path / "varied.csv")
    cfg = tiny_cfg(f"data.train_file={train}", "data.max_length=96")
    grouped = _pad_fraction(_datamodule(cfg, tmp_path, group_by_length=True).train_dataloader())
    random_ = _pad_fraction(_datamodule(cfg, tmp_path).train_dataloader())
    assert grouped < 0.5 * random_, (grouped, random_)
    loader = _datamodule(cfg, tmp_path, group_by_length=True).train_dataloader()
    epoch0 = [b["input_ids"].tolist() for b in loader]
    loader.sampler.set_epoch(1)
    epoch1 = [b["input_ids"].tolist() for b in loader]
    assert epoch0 != epoch1, "each epoch draws a new order"
    assert sorted(map(str, epoch0)) != sorted(map(str, epoch1)), "and new batches"


def test_group_by_length_refuses_several_processes(tiny_cfg, tmp_path):
    """Lightning would reshuffle the grouped order through a DistributedSampler: the config check
    says so before anything loads, and the datamodule itself refuses too."""
    with pytest.raises(ConfigError, match="one device") as err:
        check_config(tiny_cfg("hardware=cpu-ddp", "data.group_by_length=true"))
    assert (err.value.key, err.value.value) == ("data.group_by_length", True)
    dm = _datamodule(tiny_cfg(), tmp_path, group_by_length=True)
    dm.trainer = types.SimpleNamespace(world_size=2)
    with pytest.raises(ConfigError, match="one device"):
        dm.train_dataloader()


def test_bad_padding_names_key_value_and_allowed(tiny_cfg):
    with pytest.raises(ConfigError, match="longest.*max_length") as err:
        check_config(tiny_cfg("data.padding=max"))
    assert (err.value.key, err.value.value) == ("data.padding", "max")
    with pytest.raises(ConfigError, match="bool") as err:
        check_config(tiny_cfg("data.group_by_length=sometimes"))
    assert err.value.key == "data.group_by_length"


class _BatchRecorder(L.LightningModule):
    """Records what each optimizer step trained on; one weight, so fitting takes no time."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list] = {}

    def training_step(self, batch, batch_idx):
        self.seen[self.trainer.global_step] = batch["input_ids"].tolist()
        return (self.weight * batch["attention_mask"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_recording(dm, max_steps: int, folder, resume=None) -> dict[int, list]:
    module = _BatchRecorder()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, max_epochs=-1,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[ModelCheckpoint(dirpath=folder, every_n_train_steps=35,
                                                   save_last=True, save_top_k=0)])
    trainer.fit(module, dm, ckpt_path=resume)
    return module.seen


def test_group_by_length_resumes_mid_epoch_with_the_uninterrupted_batches(tiny_cfg, tmp_path):
    """400 rows of batch 8: 50 batches an epoch; the stop at step 70 is mid-way through epoch 1,
    whose order differs from epoch 0's, so the sampler's epoch has to come back with the loader."""
    cfg = tiny_cfg(f"data.train_file={_varied_lengths_csv(tmp_path / 'varied.csv')}",
                   "data.max_length=96")
    fresh = lambda: _datamodule(cfg, tmp_path, group_by_length=True)
    uninterrupted = _fit_recording(fresh(), 120, tmp_path / "a")
    _fit_recording(fresh(), 70, tmp_path / "b")
    resumed = _fit_recording(fresh(), 120, tmp_path / "b", resume=tmp_path / "b" / "last.ckpt")
    assert sorted(resumed) == list(range(70, 120))
    assert all(resumed[step] == uninterrupted[step] for step in resumed)
    assert uninterrupted[60] != uninterrupted[10], "epochs differ in order"

