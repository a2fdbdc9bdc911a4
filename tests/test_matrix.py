"""Every model family against every task: each pair that can work fits on tiny generated data through
`tunelab.train.train` and records its task's metrics in a real MLflow store; each pair that cannot
is rejected before any data or weights load, naming the key and what would work."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import open_dict

from tests.conftest import train_runs
from tunelab import data, models
from tunelab.config import ConfigError, check_config
from tunelab.train import train

MODELS = ("tiny-bert", "tiny-llama", "lstm")
TASKS = ("sentiment", "intent", "qa", "instruct", "lm")
# The head each fitting pair resolves `task.head` to (qa: null -> the family's own head);
# a missing pair is rejected, with the hint its message must carry.
HEADS = {
    ("tiny-bert", "sentiment"): "classifier", ("tiny-bert", "intent"): "classifier",
    ("tiny-bert", "qa"): "span", ("tiny-bert", "lm"): "lm",
    ("tiny-llama", "sentiment"): "classifier", ("tiny-llama", "intent"): "classifier",
    ("tiny-llama", "qa"): "generate", ("tiny-llama", "instruct"): "generate",
    ("tiny-llama", "lm"): "lm",
    ("lstm", "sentiment"): "classifier", ("lstm", "intent"): "classifier",
}
HINTS = {("tiny-bert", "instruct"): "model=smollm2-135m", ("lstm", "qa"): "model=minilm",
         ("lstm", "instruct"): "model=smollm2-135m", ("lstm", "lm"): "model=minilm"}
PAIRS = [(m, t) for m in MODELS for t in TASKS]
assert set(HEADS) | set(HINTS) == set(PAIRS) and not set(HEADS) & set(HINTS)

# Two steps on a few rows: this checks that each pair wires up end to end, not that it learns.
FAST = ["adapter=full", "trainer.max_steps=2", "data.batch_size=4", "data.max_length=64",
        "data.synthetic.train_size=48", "data.synthetic.eval_size=4"]
GENERATE = ["task.generate_eval_samples=4", "task.max_new_tokens=4"]
PER_TASK = {"intent": ["task.num_classes=4"], "qa": ["task.doc_stride=24", *GENERATE],
            "instruct": GENERATE}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, MlflowClient]:
    """One MLflow store for every pair: creating a store's tables takes seconds, a pair's fit about
    as long."""
    folder = tmp_path_factory.mktemp("mlruns")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    client.search_experiments()
    return folder, client


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=[f"{m}-{t}" for m, t in PAIRS])
def test_model_task_pair(model, task, tiny_cfg, store, monkeypatch):
    folder, client = store
    cfg = tiny_cfg(f"model={model}", f"task={task}", *FAST, *PER_TASK.get(task, []))
    with open_dict(cfg):
        cfg.tracking.uri, cfg.paths.mlruns_dir = f"sqlite:///{folder / 'mlflow.db'}", str(folder)
    before = len(train_runs(client))
    if (model, task) in HINTS:
        for name, module in (("load_splits", data), ("load_tokenizer", models),
                             ("load_model", models)):
            monkeypatch.setattr(module, name, _must_not_run(name))
        with pytest.raises(ConfigError) as err:
            train(cfg)
        assert err.value.key == "task" and HINTS[model, task] in str(err.value)
        assert len(train_runs(client)) == before, "nothing is tracked"
        return
    train(cfg)
    [run] = [r for r in train_runs(client) if (r.data.params["model.name"],
                                                r.data.params["task.name"]) == (model, task)]
    assert run.info.status == "FINISHED"
    assert run.data.params["task.head"] == HEADS[model, task], "the resolved head is recorded"
    for split in ("val", "test"):
        for metric in check_config(cfg).task.metrics:     # resolved: the head's own
            assert f"{split}/{metric}" in run.data.metrics, f"{split}/{metric}"
    assert f"val/{cfg.task.monitor}_best" in run.data.metrics


def _must_not_run(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} ran for a pair the config check should have rejected")
    return fail
