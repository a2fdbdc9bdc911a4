"""The adapter-method protocol, checked on every registered method: each setting documented and
bound to peft's config under the mapped name, each YAML matching its method's settings, each range
refused with the key, the value and what is allowed, and a new method needing nothing but its
module, its YAML and its registry line (tests/test_adapters.py trains every method)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from peft import PeftModel

from tests.conftest import CONF, compose_cfg, train_runs
from tunelab import adapters, models
from tunelab.adapters import METHODS
from tunelab.adapters.method import OWN, AdapterMethod, PeftMethod
from tunelab.config import ConfigError, check_config
from tunelab.train import train

YAMLS = {path.stem: yaml.safe_load(path.read_text()) for path in (CONF / "adapter").glob("*.yaml")}
USER_NAMES = {"r", "alpha", "dropout", "target_modules", "num_virtual_tokens"}


def test_every_method_has_a_yaml_and_every_yaml_a_method():
    assert {node["method"] for node in YAMLS.values()} == set(METHODS)
    assert set(METHODS) <= set(YAMLS), "each method's own option is named after it"


@pytest.mark.parametrize("option", sorted(YAMLS))
def test_each_yaml_holds_exactly_its_methods_documented_settings(option):
    node = YAMLS[option]
    settings = dataclasses.fields(METHODS[node["method"]])
    assert set(node) - {"search"} == {f.name for f in settings}, "litgpt's YAML = signature check"
    for f in settings:
        assert len(f.metadata["doc"]) > 15, f"{option}: {f.name} says what it changes"


@pytest.mark.parametrize("method", [m for m, cls in METHODS.items() if issubclass(cls, PeftMethod)])
def test_peft_methods_hand_peft_its_own_argument_names(method, tmp_path):
    """The one name mapping (each field's `peft`) binds to the peft config's signature, the
    user-facing names stay tunelab's, and the config built is of the declared peft type (the key
    its merge rule is found by)."""
    cls = METHODS[method]
    accepted = inspect.signature(cls.config_class).parameters
    handed = {f.name: f.metadata["peft"] or f.name for f in dataclasses.fields(cls)
              if f.metadata["peft"] != OWN}
    assert set(handed.values()) <= set(accepted), f"{method}: {handed}"
    renamed = {name for name, peft_name in handed.items() if peft_name != name}
    assert renamed <= USER_NAMES, f"{method}: only tunelab's fixed names differ from peft's"
    cfg = check_config(compose_cfg([f"adapter={method}", "model=tiny-bert"], tmp_path))
    built = adapters.method_of(cfg.adapter).peft_config(None, cfg.model, cfg.task)
    assert built.peft_type == cls.peft_type


def _out_of_range(check) -> object:
    return next(v for v in (0, 1.5, -1) if not check.ok(v))


RANGES = [(method, f.name, f.metadata["check"]) for method, cls in METHODS.items()
          for f in dataclasses.fields(cls) if f.metadata["check"] is not None]


@pytest.mark.parametrize(("method", "key", "check"), RANGES,
                         ids=[f"{m}.{k}" for m, k, _ in RANGES])
def test_each_settings_range_is_refused_with_key_value_and_allowed(method, key, check, tmp_path):
    bad = _out_of_range(check)
    cfg = compose_cfg([f"adapter={method}", f"adapter.{key}={bad}"], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert (err.value.key, err.value.value, err.value.allowed) == (f"adapter.{key}", bad,
                                                                    check.allowed)


def test_an_unknown_method_or_setting_names_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg(["adapter.method=lorra"], tmp_path))
    assert err.value.key == "adapter.method" and "lorra" in str(err.value)
    assert all(m in err.value.allowed for m in METHODS)
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg(["adapter=vera", "+adapter.vera_dropout=0.1"], tmp_path))
    assert err.value.key == "adapter.vera_dropout" and "'dropout'" in err.value.allowed


# A method tunelab does not ship: peft's FourierFT, as a user would add it.
FOURIER_MODULE = '''
from dataclasses import dataclass

from peft import FourierFTConfig, PeftType
from peft.utils import TRANSFORMERS_MODELS_TO_FOURIERFT_TARGET_MODULES_MAPPING

from tunelab.adapters.method import POSITIVE_INT, setting
from tunelab.adapters.targets import WeightAdapter


@dataclass
class FourierFT(WeightAdapter):
    """Trained spectral coefficients of each target's update."""
    n_frequency: int = setting(64, check=POSITIVE_INT, doc="trained frequencies per target")
    scaling: float = setting(100.0, doc="scale of the update rebuilt from the frequencies")

    config_class = FourierFTConfig
    peft_type = PeftType.FOURIERFT
    peft_defaults = TRANSFORMERS_MODELS_TO_FOURIERFT_TARGET_MODULES_MAPPING
'''
FOURIER_YAML = """name: fourierft
method: fourierft
lr: 1.0e-2
n_frequency: 64
scaling: 100.0
target_modules: null
"""


def test_a_new_method_is_one_module_one_yaml_and_one_registry_line(tmp_path, monkeypatch, client):
    (tmp_path / "fourierft.py").write_text(FOURIER_MODULE)
    (tmp_path / "conf" / "adapter").mkdir(parents=True)
    (tmp_path / "conf" / "adapter" / "fourierft.yaml").write_text(FOURIER_YAML)
    spec = importlib.util.spec_from_file_location("fourierft", tmp_path / "fourierft.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fourierft", module)
    spec.loader.exec_module(module)
    monkeypatch.setitem(METHODS, "fourierft", module.FourierFT)        # the registry line

    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg([search, "adapter=fourierft", "adapter.n_frequency=0"], tmp_path))
    assert err.value.key == "adapter.n_frequency"
    with pytest.raises(ConfigError) as err:
        train(compose_cfg([search, "model=tiny-bert", "adapter=fourierft",
                           "adapter.target_modules=[q_proj]"], tmp_path))
    assert err.value.key == "adapter.target_modules" and "attention.self.query" in err.value.allowed

    cfg = compose_cfg([search, "model=tiny-bert", "adapter=fourierft", "trainer.max_steps=3",
                       "trainer.max_epochs=null", "trainer.enable_progress_bar=false",
                       "data.synthetic.train_size=64", "data.synthetic.eval_size=16",
                       "data.batch_size=16", "data.max_length=16"], tmp_path)
    train(cfg)
    [run] = train_runs(client)
    assert run.info.status == "FINISHED" and run.data.params["adapter.method"] == "fourierft"
    assert run.data.params["adapter.n_frequency"] == "64", "its settings are recorded"
    weights = Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="weights", dst_path=str(tmp_path / "dl"),
        tracking_uri=cfg.tracking.uri))
    checked = check_config(cfg)
    tokenizer = models.load_tokenizer(checked.model)
    labels = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/labels.json")["labels"]
    reloaded = adapters.load_weights(
        models.load_model(checked.model, checked.task, labels, tokenizer, checked.seed), weights)
    assert isinstance(reloaded, PeftModel)
    inputs = tokenizer(["a fine film"], return_tensors="pt")
    with torch.no_grad():
        adapted = reloaded.eval()(**inputs).logits
        merged = adapters.merge(reloaded)(**inputs).logits
    assert not isinstance(adapters.merge(reloaded), PeftModel), "its merge rule: merges"
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)


def test_only_methods_that_check_the_module_tree_make_runs_build_it():
    """`inspects_modules` follows from whether the module overrides `check_fit`."""
    assert not AdapterMethod.inspects_modules()
    assert {m for m, cls in METHODS.items() if not cls.inspects_modules()} == \
        {"full", "head", "prefix", "prompt"}
