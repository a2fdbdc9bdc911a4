"""Every config option composes through real Hydra, records its own name, and passes the checks;
bad input fails fast with the key, the value and what is allowed."""

from __future__ import annotations

import time

import pytest
from hydra.errors import MissingConfigException

from tests.conftest import CONF, compose_cfg
from tunelab.config import ConfigError, check_config

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))
           if g not in ("experiment", "hparams_search", "launcher", "hydra")]
# Each option must pass the checks next to at least one partner: a model for the other groups, an
# adapter for models (lstm trains from scratch, so only adapter=full suits it).
PARTNERS = {"model": ["adapter=lora", "adapter=full"]}
PARTNER_MODELS = ["model=tiny-bert", "model=tiny-llama", "model=lstm"]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_records_its_name(group, option, tmp_path):
    errors = []
    partners = PARTNERS.get(group, PARTNER_MODELS)
    for partner in partners:
        overrides = [f"{group}={option}", partner]
        cfg = compose_cfg(overrides, tmp_path)
        assert cfg[group].name == option
        try:
            checked = check_config(cfg)
        except ConfigError as err:
            errors.append(str(err))
            continue
        assert checked[group].name == option
        return
    pytest.fail(f"{group}={option} passes the checks with none of {partners}: {errors}")


def test_defaults_are_the_documented_ones(tmp_path):
    cfg = compose_cfg([], tmp_path)
    assert (cfg.model.name, cfg.task.name, cfg.adapter.name, cfg.hardware.name) == \
        ("minilm", "sentiment", "lora", "cpu")
    assert cfg.optim.lr == cfg.adapter.lr, "each adapter carries its own learning rate"


def test_unknown_group_option_names_the_options(tmp_path):
    with pytest.raises(MissingConfigException) as err:
        compose_cfg(["adapter=loraa"], tmp_path)
    assert "loraa" in str(err.value) and "lora" in str(err.value)


BAD = [
    (["+adapter.rank=4"], "adapter.rank", "unknown key"),
    (["optim.lr=0"], "optim.lr", "> 0"),
    (["optim.lr=-0.001"], "optim.lr", "> 0"),
    (["adapter.r=0"], "adapter.r", "> 0"),
    (["data.batch_size=0"], "data.batch_size", "> 0"),
    (["data.batch_size=abc"], "data.batch_size", "int"),
    (["data.max_length=100000"], "data.max_length", "position limit"),
    (["trainer.max_steps=0"], "trainer.max_steps", "-1"),
    (["adapter.dropout=1.5"], "adapter.dropout", "[0, 1)"),
    (["tracking.on_finished=maybe"], "tracking.on_finished", "skip or rerun"),
    (["+model.colour=red"], "model.colour", "unknown key"),
    (["seed=abc"], "seed", "integer"),
    (["data.batch_size=30", "trainer.accumulate_grad_batches=4"], "data.batch_size", "multiple"),
    (["optim.lr=fast"], "optim.lr", "float"),
    (["trainer.checkpoint_every_n_steps=0"], "trainer.checkpoint_every_n_steps", "> 0"),
    (["model.trust_remote_code=maybe"], "model.trust_remote_code", "bool"),
]


@pytest.mark.parametrize(("overrides", "key", "allowed"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_values_fail_fast_with_key_value_and_allowed(overrides, key, allowed, tmp_path):
    start = time.perf_counter()
    cfg = compose_cfg(overrides, tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert err.value.key == key
    assert allowed in str(err.value)
    assert str(overrides[-1].split("=", 1)[1]) in str(err.value)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(("model", "task", "head"), [
    ("tiny-bert", "qa", "span"), ("tiny-llama", "qa", "generate"), ("lstm", "sentiment", "classifier"),
    ("tiny-llama", "sentiment", "classifier"), ("tiny-bert", "lm", "lm")])
def test_a_null_head_resolves_to_the_familys_own(model, task, head, tmp_path):
    cfg = compose_cfg([f"model={model}", f"task={task}", "adapter=full", "task.head=null"], tmp_path)
    assert check_config(cfg).task.head == head, "the config a run records names the head it used"


@pytest.mark.parametrize(("overrides", "key", "allowed"), [
    (["model=tiny-bert", "task=qa", "task.head=generate"], "task.head", "needs model=smollm2-135m"),
    (["model=tiny-llama", "task=qa", "task.head=span"], "task.head", "needs model=minilm"),
    (["model=tiny-llama", "task=sentiment", "task.head=span"], "task.head",
     "one of ['classifier', 'generate']"),
    (["model=tiny-bert", "task=lm", "task.head=generate"], "task.head", "one of ['lm']"),
    (["model=tiny-llama", "task=qa", "task.generate_eval_samples=0"], "task.generate_eval_samples",
     "> 0"),
])
def test_a_head_the_family_lacks_is_rejected(overrides, key, allowed, tmp_path):
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg([*overrides, "adapter=full"], tmp_path))
    assert err.value.key == key and allowed in str(err.value)
    assert overrides[-1].split("=", 1)[1] in str(err.value)


@pytest.mark.parametrize("task", ["sentiment", "intent", "qa", "lm"])
def test_the_encoder_vs_decoder_arms_fit_every_task_both_families_serve(task, tmp_path):
    heads = {}
    for arm in ("encoder-classifier", "decoder-lora"):
        cfg = compose_cfg(["experiment=encoder-vs-decoder", f"+experiment/arms={arm}",
                           f"task={task}"], tmp_path)
        heads[arm] = check_config(cfg).task.head
    native = {"qa": "span", "lm": "lm"}.get(task, "classifier")
    assert heads == {"encoder-classifier": native, "decoder-lora": "generate"}
