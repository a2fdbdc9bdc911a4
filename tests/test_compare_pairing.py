"""`tunelab-compare --by model` on real tiny runs shaped like experiment=encoder-vs-decoder: an
encoder fine-tuned in full with its classifier head against a decoder with LoRA writing its
answer (task.head=generate), each at two learning rates: model, adapter and head change
together (the arm), the lr must match, nothing is pooled."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli, train_runs
from tests.test_compare import keep_global_uri, store_uri  # noqa: F401 (fixture)

# Two arms as conf/experiment/arms/ has them, on the tiny models, from a config dir of the test.
ARMS = {"tiny-encoder": "defaults:\n  - override /model: tiny-bert\n  - override /adapter: full\n",
        "tiny-decoder": "defaults:\n  - override /model: tiny-llama\n  - override /adapter: lora\n"
                        "task:\n  head: generate\n"}
LRS = ("0.001", "0.003")
SWEEP = ["-m", f"+experiment/arms={','.join(ARMS)}", f"optim.lr={','.join(LRS)}", "seed=0",
         "trainer.max_steps=8", "trainer.max_epochs=null", "trainer.log_every_n_steps=2",
         "trainer.val_check_interval=4", "trainer.enable_progress_bar=false",
         "data.synthetic.train_size=128", "data.synthetic.eval_size=16", "data.batch_size=16",
         "data.max_length=32"]


@pytest.fixture(scope="module")
def arms_sweep(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("encoder-vs-decoder")
    arms = folder / "conf" / "experiment" / "arms"
    arms.mkdir(parents=True)
    for name, text in ARMS.items():
        (arms / f"{name}.yaml").write_text(f"# @package _global_\n{text}")
    proc = run_cli(["tunelab-train", *SWEEP, f"hydra.searchpath=[file://{folder / 'conf'}]"],
                   cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def val_acc(folder: Path) -> pd.DataFrame:
    """The runs' val/acc as MLflow holds them, read independently of tunelab.compare."""
    return pd.DataFrame([{"model": r.data.params["model.name"], "lr": r.data.params["optim.lr"],
                          "task_head": r.data.params["task.head"], "acc": r.data.metrics["val/acc"]}
                         for r in train_runs(MlflowClient(store_uri(folder)))])


def test_by_model_pairs_encoder_and_decoder_by_lr_and_seed(arms_sweep):
    proc = run_cli(["tunelab-compare", "--by", "model"], cwd=arms_sweep, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = arms_sweep / "reports" / "tunelab"
    runs = val_acc(arms_sweep)
    assert sorted(zip(runs.model, runs.task_head)) == [("tiny-bert", "classifier")] * 2 + \
        [("tiny-llama", "generate")] * 2

    summary = pd.read_csv(out / "summary.csv", dtype={"optim.lr": str})
    assert len(summary) == 4 and (summary.n == 1).all(), "two lrs per model, not pooled"
    assert sorted(zip(summary["model.name"], summary["optim.lr"])) == \
        sorted((m, lr) for m in ["tiny-bert", "tiny-llama"] for lr in LRS)

    deltas = pd.read_csv(out / "paired_deltas.csv")
    acc = deltas[deltas.quantity == "val/acc"].set_index("matched")
    assert sorted(acc.index) == [f"optim.lr={lr}" for lr in LRS]
    assert set(acc.arm) == {"model=tiny-llama"} and set(acc.baseline) == {"model=tiny-bert"}
    assert (acc.pairs == 1).all()
    by = runs.pivot(index="lr", columns="model", values="acc")
    for lr in LRS:
        expected = by.loc[lr, "tiny-llama"] - by.loc[lr, "tiny-bert"]
        assert acc.loc[f"optim.lr={lr}", "delta"] == pytest.approx(expected)

    markdown = (out / "report.md").read_text()
    keys = markdown.split("## Decision")[0]
    assert all(f"`{k}`" in keys for k in ["model.name", "adapter.name", "task.head", "optim.lr"])
    assert "two runs pair when they share `optim.lr` and the seed" in markdown
    assert "too few seeds" in markdown.lower() and "95% CI [" not in markdown

    page = (out / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    height, width, _ = matplotlib.image.imread(
        io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1]))).shape
    assert height >= 100 and width >= 400


def test_by_lr_pairs_each_model_with_itself(arms_sweep, keep_global_uri,  # noqa: F811
                                            tmp_path):
    from tunelab.compare.cli import main

    assert main(["--tracking-uri", store_uri(arms_sweep), "--by", "optim.lr",
                 "--out", str(tmp_path)]) == 0
    deltas = pd.read_csv(tmp_path / "paired_deltas.csv")
    acc = deltas[deltas.quantity == "val/acc"].set_index("matched")
    assert sorted(acc.index) == ["model=tiny-bert", "model=tiny-llama"]
    assert set(acc.arm) == {"optim.lr=0.003"} and (acc.pairs == 1).all()
    by = val_acc(arms_sweep).pivot(index="model", columns="lr", values="acc")
    for model in ["tiny-bert", "tiny-llama"]:
        assert acc.loc[f"model={model}", "delta"] == pytest.approx(
            by.loc[model, "0.003"] - by.loc[model, "0.001"])
