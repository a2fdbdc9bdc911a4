"""Every adapter on an encoder and a decoder, through the real `train()`: a real Lightning fit on
tiny random-init models, a real MLflow store in tmp_path, then the trained model is checked
parameter by parameter and its MLflow artifact is reloaded on a fresh base.

The toy task is one a random-init frozen body can serve (the label is which of two disjoint word
lists the sentence is drawn from), so every method, the linear probe included, must lower the loss.
"""

from __future__ import annotations

import copy
import csv
import random
from pathlib import Path

import mlflow
import pytest
import torch
from omegaconf import DictConfig
from peft import PeftModel
from safetensors.torch import load_file

from tests.conftest import train_runs
from tunelab import adapters, data, models
from tunelab.config import ConfigError, check_config
from tunelab.train import train

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
ANIMALS = ["cat", "dog", "horse", "cow", "bird", "fish", "sheep", "lion"]
# Rates for random-init bodies on the toy task: the presets' rates are for pretrained ones.
LR = {"full": 1e-3, "lora": 1e-2, "dora": 1e-2, "prefix": 1e-2, "prompt": 3e-2, "ia3": 3e-2,
      "bitfit": 1e-2, "head": 1e-2}
# tiny-llama has no biases (rejected for bitfit, see below); Qwen2-style attention biases qualify.
EXTRA = {("tiny-llama", "bitfit"): ["+model.config.attention_bias=true"]}


def _write_toy(folder: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    path = folder / f"toy-{seed}.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for _ in range(rows):
            label = rng.choice(["colour", "animal"])
            words = COLOURS if label == "colour" else ANIMALS
            writer.writerow([" ".join(rng.choices(words, k=rng.randint(2, 6))), label])
    return path


@pytest.fixture
def toy_cfg(tiny_cfg, tmp_path):
    train_file, val_file = _write_toy(tmp_path, 480, 1), _write_toy(tmp_path, 64, 2)

    def make(*overrides: str) -> DictConfig:
        return tiny_cfg(f"data.train_file={train_file}", f"data.validation_file={val_file}",
                        "data.batch_size=16", "data.max_length=16", "trainer.max_steps=30",
                        "trainer.checkpoint_every_n_steps=1000", *overrides)
    return make


@pytest.fixture
def spy(monkeypatch):
    """Keeps the model `train()` adapts, and a copy of it as it was before training (the real
    `apply_adapter` runs unchanged)."""
    seen: dict[str, torch.nn.Module] = {}
    real = adapters.apply_adapter

    def apply_and_keep(*args, **kwargs):
        seen["trained"] = real(*args, **kwargs)
        seen["before"] = copy.deepcopy(seen["trained"])
        return seen["trained"]
    monkeypatch.setattr(adapters, "apply_adapter", apply_and_keep)
    return seen


def _val_batches(cfg: DictConfig) -> tuple[list[dict], list[str]]:
    """The validation batches and label names, rebuilt from the config as the run built them."""
    cfg = check_config(cfg)
    raw = data.load_splits(cfg.data, cfg.task, Path(cfg.paths.cache_dir))
    task_data = data.task_data_for(raw, cfg.data, cfg.task)
    dm = data.TuneDataModule(raw, task_data, models.load_tokenizer(cfg.model),
                             max_length=cfg.data.max_length, batch_size=32, num_workers=0,
                             cache_dir=Path(cfg.paths.cache_dir))
    dm.setup()
    return list(dm.val_dataloader()), task_data.label_names


@torch.no_grad()
def _evaluate(net: torch.nn.Module, batches: list[dict]) -> tuple[float, torch.Tensor]:
    """Mean validation loss and the logits, in eval mode."""
    net.eval()
    outs = [net(**batch) for batch in batches]
    sizes = [len(batch["labels"]) for batch in batches]
    loss = sum(o.loss.item() * n for o, n in zip(outs, sizes)) / sum(sizes)
    return loss, torch.cat([o.logits for o in outs])


def _fresh_model(cfg: DictConfig, labels: list[str], weights: Path | None = None) -> torch.nn.Module:
    cfg = check_config(cfg)
    return models.load_model(cfg.model, cfg.task, labels, models.load_tokenizer(cfg.model),
                             cfg.seed, weights=None if weights is None else str(weights))


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama"])
@pytest.mark.parametrize("method", list(LR))
def test_method_trains_only_its_parameters_and_reloads(method, model, toy_cfg, spy, client,
                                                       tmp_path):
    cfg = toy_cfg(f"model={model}", f"adapter={method}", f"optim.lr={LR[method]}",
                  *EXTRA.get((model, method), []))
    train(cfg)
    [run] = train_runs(client)
    metrics = run.data.metrics
    trained, before = spy["trained"], spy["before"]
    batches, labels = _val_batches(cfg)

    loss_before, _ = _evaluate(before, batches)
    loss_after, logits = _evaluate(trained, batches)
    assert loss_after < 0.6 * loss_before, f"{method} on {model}: {loss_before=:.3f} {loss_after=:.3f}"
    assert loss_after == pytest.approx(metrics["val/loss"], abs=1e-4), "recorded val/loss is final"

    old = dict(before.named_parameters())
    changed = 0
    for name, param in trained.named_parameters():
        same = torch.equal(param, old[name])
        assert same != param.requires_grad, f"{name}: trainable={param.requires_grad} same={same}"
        changed += 0 if same else param.numel()
    assert changed == metrics["params/trainable"]
    assert metrics["params/total"] == sum(p.numel() for p in trained.parameters())
    assert metrics["params/trainable_pct"] == pytest.approx(100 * changed / metrics["params/total"])

    weights = Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="weights", dst_path=str(tmp_path / "dl"),
        tracking_uri=cfg.tracking.uri))
    files = list(weights.glob("*.safetensors"))
    assert metrics["params/adapter_mb"] == pytest.approx(sum(f.stat().st_size for f in files) / 2**20)
    saved = sum(t.numel() for f in files for t in load_file(str(f)).values())
    expected = metrics["params/total"] if method == "full" else metrics["params/trainable"]
    assert len(files) == 1 and saved == expected, "the artifact holds the trained tensors only"
    if method == "full":
        reloaded = _fresh_model(cfg, labels, weights)
    else:
        assert adapters.is_adapter_folder(weights)
        reloaded = adapters.load_weights(_fresh_model(cfg, labels), weights)
        assert isinstance(reloaded, PeftModel) == (method not in ("bitfit", "head"))
    _, reloaded_logits = _evaluate(reloaded, batches)
    torch.testing.assert_close(reloaded_logits, logits, rtol=0, atol=1e-5)
