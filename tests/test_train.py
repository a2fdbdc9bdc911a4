"""A real Lightning fit of tiny-bert, tracked in a real MLflow store in tmp_path, read back."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from tests.conftest import train_runs
from tunelab import build
from tunelab.config import check_config
from tunelab.deploy.classifier import build_net
from tunelab.train import train

REQUIRED_METRICS = ["train/loss", "val/loss", "val/acc", "val/f1", "val/acc_best", "test/acc",
                    "test/f1", "params/trainable", "params/total", "params/trainable_pct",
                    "params/adapter_mb", "perf/train_samples_per_sec", "perf/train_tokens_per_sec",
                    "perf/peak_mem_mb", "perf/mfu", "time/fit_seconds"]


def _recompute_val(cfg, weights: Path):
    """Rebuild the trained model from its artifact alone and evaluate the validation split."""
    cfg = check_config(cfg)
    inputs = build.build_data(cfg)
    tokenizer = build.build_tokenizer(cfg)
    net = build_net(cfg, inputs.label_names, weights, tokenizer)
    dm = build.build_datamodule(cfg, inputs, tokenizer, batch_size=16)
    dm.setup()
    losses, correct, count = [], 0, 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            out = net(**batch)
            losses.append(out.loss.item() * len(batch["labels"]))
            correct += (out.logits.argmax(-1) == batch["labels"]).sum().item()
            count += len(batch["labels"])
    return sum(losses) / count, correct / count


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_fit_records_the_contract_and_weights_reload(adapter, tiny_cfg, client, tmp_path):
    cfg = tiny_cfg(f"adapter={adapter}")
    result = train(cfg, overrides=[f"adapter={adapter}", "model=tiny-bert"])
    [run] = train_runs(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"tiny-bert-{adapter}-sentiment-cpu-s0"
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    for key in REQUIRED_METRICS:
        assert key in metrics, key
    for key in ("acc", "f1"):
        assert 0 <= metrics[f"val/{key}"] <= 1 and 0 <= metrics[f"test/{key}"] <= 1
    assert result == pytest.approx(metrics["val/acc"])
    if adapter == "full":   # LoRA on a random-init frozen base has little to adapt; see test_adapters
        assert metrics["val/acc"] > 0.7, "tiny-bert learns the generated sentiment"
    assert params["model.name"] == "tiny-bert" and params["adapter.name"] == adapter
    assert params["task.name"] == "sentiment" and params["hardware.name"] == "cpu"
    assert params["seed"] == "0" and params["optim.lr"] == "0.001"
    assert tags["tunelab.run_kind"] == "train" and len(tags["tunelab.config_hash"]) == 16
    assert tags["tunelab.overrides"] == f"adapter={adapter} model=tiny-bert"
    assert tags["tunelab.version.peft"] and tags["tunelab.version.torch"]
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == \
        ["sentiment-train", "sentiment-validation", "sentiment-test"]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(10, 201, 10))
    val_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert val_steps[-1] == 200, "validation runs at the end of fit"

    out = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "dl"),
                                                   tracking_uri=cfg.tracking.uri))
    resolved = yaml.safe_load((out / "config" / "config.yaml").read_text())
    assert resolved["model"]["name"] == "tiny-bert" and resolved["adapter"]["name"] == adapter
    assert yaml.safe_load((out / "config" / "overrides.yaml").read_text()) == \
        [f"adapter={adapter}", "model=tiny-bert"]
    weights = out / "weights"
    files = {p.name for p in weights.iterdir()}
    if adapter == "lora":
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        assert "model.safetensors" not in files, "the frozen base is never copied"
        assert metrics["params/trainable"] < 0.05 * metrics["params/total"]
    else:
        assert "model.safetensors" in files
        assert metrics["params/trainable"] == metrics["params/total"]
    size = sum(p.stat().st_size for p in weights.glob("*.safetensors")) / 2**20
    assert metrics["params/adapter_mb"] == pytest.approx(size)
    loss, acc = _recompute_val(cfg, weights)
    assert loss == pytest.approx(metrics["val/loss"], abs=1e-5)
    assert acc == pytest.approx(metrics["val/acc"], abs=1e-6)


def test_rerun_of_a_finished_config_is_skipped(tiny_cfg, client):
    first = train(tiny_cfg())
    second = train(tiny_cfg())
    [run] = train_runs(client)
    assert second == pytest.approx(first)
    rerun = train(tiny_cfg("tracking.on_finished=rerun"))
    assert rerun == pytest.approx(first), "same config and seed on CPU give the same metrics"
    assert len(train_runs(client)) == 2


def test_a_run_that_raises_ends_failed_with_the_error(tiny_cfg, client):
    with pytest.raises(FloatingPointError, match="diverged"):
        train(tiny_cfg("optim.lr=1e12", "adapter=full", "trainer.gradient_clip_val=null"))
    [run] = train_runs(client)
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["tunelab.error"]
    assert not math.isnan(run.data.metrics.get("params/total", 0))


def test_start_up_is_timed_from_the_process_start():
    """time/startup_seconds counts from the moment the process started: a process that waits
    0.4 s before asking reads 0.4 s, not the up-to-a-second-longer age from psutil's boot time."""
    import subprocess
    import sys

    code = ("import time; time.sleep(0.4); from tunelab.startup import process_start_time; "
            "print(time.time() - process_start_time())")
    ages = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(3)]
    assert 0.4 <= min(ages) < 0.75, ages
