"""The task registry (tunelab.tasks): every kind x head x family composes from conf/ with a tiny
model, and its transformers class, peft task type, metrics and inference pipeline are the ones its
spec names; `task.metrics` is checked before any work and decides what a run reports."""

from __future__ import annotations

import lightning as L
import pytest
import transformers

from tests.conftest import compose_cfg
from tunelab import adapters, build, data, models, tasks
from tunelab.config import ConfigError, check_config
from tunelab.data import synthetic
from tunelab.deploy.pipeline import make_pipeline, unsupported
from tunelab.train import train

MODEL = {"encoder": "tiny-bert", "decoder": "tiny-llama", "rnn": "lstm"}
TASK = {"classification": "sentiment", "qa": "qa", "instruct": "instruct", "lm": "lm"}
SMALL = ["adapter=full", "data.synthetic.train_size=16", "data.synthetic.eval_size=8",
         "data.batch_size=8", "data.max_length=64", "++task.doc_stride=16",
         "++task.max_new_tokens=4", "++task.generate_eval_samples=4"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(spec: tasks.TaskSpec, tmp_path, *overrides: str):
    return check_config(compose_cfg([f"model={MODEL[spec.family]}", f"task={TASK[spec.kind]}",
                                     f"task.head={spec.head}", *SMALL, *overrides], tmp_path))


def _validate(cfg) -> tuple[dict[str, float], build.TaskInputs, object, object]:
    """One validation pass of a freshly built model, through the builders train uses; returns
    what it logged, the task inputs, the tokenizer and the network."""
    inputs = build.build_data(cfg)
    tokenizer = build.build_tokenizer(cfg)
    net = build.build_model(cfg, inputs.label_names, tokenizer)
    module = build.build_module(cfg, net, inputs, tokenizer)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=1)
    [logged] = trainer.validate(module, build.build_datamodule(cfg, inputs, tokenizer),
                                verbose=False)
    return logged, inputs, tokenizer, net


@pytest.mark.parametrize("key", list(tasks.SPECS), ids="-".join)
def test_every_spec_composes_and_its_parts_come_from_the_spec(key, tmp_path):
    spec = tasks.SPECS[key]
    cfg = _cfg(spec, tmp_path)
    assert tasks.spec_for(cfg.task, cfg.model.family) is spec
    assert list(cfg.task.metrics) == list(spec.metrics), "an empty list resolves to the spec's"
    skeleton = models.skeleton(cfg.model, cfg.task)
    expected = getattr(transformers, spec.auto_class)._model_mapping[type(skeleton.config)]
    assert type(skeleton) is expected
    logged, inputs, tokenizer, net = _validate(cfg)
    assert set(logged) == {*(f"val/{m}" for m in spec.metrics), "val/loss",
                           f"val/{cfg.task.monitor}_best"}
    reason = unsupported(cfg)
    assert (reason is None) == (spec.pipeline is not None), reason
    if spec.pipeline is not None:
        pipeline = make_pipeline(cfg, inputs.label_names, net.eval(), tokenizer)
        assert type(pipeline) is tasks.load(spec.pipeline)
        assert pipeline.model_type == spec.model_type
        assert pipeline.inputs == spec.input_columns(cfg.data)


@pytest.mark.parametrize("key", [k for k, s in tasks.SPECS.items()
                                 if s.peft_task_type and s.family != "rnn"], ids="-".join)
def test_the_peft_task_type_is_the_specs(key, tmp_path):
    spec = tasks.SPECS[key]
    cfg = _cfg(spec, tmp_path, "adapter=prompt")
    net = adapters.apply_adapter(models.skeleton(cfg.model, cfg.task), cfg.adapter, cfg.model,
                                 cfg.task)
    assert net.peft_config["default"].task_type == spec.peft_task_type


def test_every_named_part_exists():
    for spec in tasks.SPECS.values():
        for ref in (spec.data, spec.pipeline, *(m.factory for m in spec.metric_specs)):
            if ref is not None:
                assert callable(tasks.load(ref)), ref
    for kind in tasks.KINDS.values():
        assert set(kind.generators) <= set(synthetic.GENERATORS), kind.name


@pytest.mark.parametrize(("overrides", "key", "named"), [
    (["model=tiny-bert", "task=sentiment", "task.metrics=[acc,bleu]"], "task.metrics",
     "unknown: ['bleu']"),
    # ppl is a metric of generative qa, not of the span head
    (["model=tiny-bert", "task=qa", "task.metrics=[ppl]"], "task.metrics", "['em', 'f1']"),
    (["model=tiny-llama", "task=instruct", "task.metrics=[ppl]", "task.monitor=em"],
     "task.monitor", "one of task.metrics ['ppl']"),
])
def test_a_metric_the_head_does_not_compute_fails_before_any_work(overrides, key, named,
                                                                   tmp_path, monkeypatch):
    for name in ("load_splits", "load_tokenizer", "load_model"):
        monkeypatch.setattr(data if name == "load_splits" else models, name, _must_not_run)
    with pytest.raises(ConfigError) as err:
        train(compose_cfg(["adapter=full", *overrides], tmp_path))
    assert err.value.key == key and named in str(err.value)


def test_a_run_reports_the_metrics_its_task_lists(tmp_path):
    """instruct with task.metrics=[ppl]: no greedy answers, so no em, and ppl as always."""
    spec = tasks.SPECS["instruct", "generate", "decoder"]
    logged, *_ = _validate(_cfg(spec, tmp_path, "task.metrics=[ppl]"))
    assert set(logged) == {"val/ppl", "val/loss", "val/ppl_best"}


def _must_not_run(*args, **kwargs):
    raise AssertionError("work started before the config check failed")
