"""Prefix tuning on the installed transformers and peft (`tunelab.adapters.compat`): BERT, RoBERTa
and Llama read the prefix in training and generation, through a reload too, and the shim acts
exactly where peft alone would refuse or drop the prefix."""

from __future__ import annotations

import inspect

import pytest
import torch
from peft import PeftModel, get_peft_model

from tests.conftest import train_runs
from tests.test_adapters import BODY, _evaluate, _val_batches, spy, toy_cfg  # noqa: F401
from tunelab import adapters, models
from tunelab.adapters import compat
from tunelab.config import check_config
from tunelab.train import train

ROBERTA = ["model.config.model_type=roberta"]
# (overrides, task): BERT and RoBERTa encoders for both encoder heads, Llama for its three heads.
SPAN = ["task.doc_stride=8"]
PREFIXED = {"bert-classifier": ([], "sentiment"), "bert-span": (SPAN, "qa"),
            "roberta-classifier": (ROBERTA, "sentiment"), "roberta-span": ([*ROBERTA, *SPAN], "qa"),
            "llama-classifier": (["model=tiny-llama"], "sentiment"),
            "llama-generate": (["model=tiny-llama"], "instruct")}

pytestmark = pytest.mark.usefixtures("one_thread")


def _prefixed(tiny_cfg, overrides: list[str], task: str):
    """The checked config, tokenizer and a prefix-tuned model with its prefix moved off its init."""
    cfg = check_config(tiny_cfg("adapter=prefix", "adapter.num_virtual_tokens=4", f"task={task}",
                                *overrides))
    tokenizer = models.load_tokenizer(cfg.model)
    labels = ["negative", "positive"] if task == "sentiment" else None
    net = adapters.apply_adapter(models.load_model(cfg.model, cfg.task, labels, tokenizer),
                                 cfg.adapter, cfg.model, cfg.task).eval()
    with torch.no_grad():
        for param in net.prompt_encoder.parameters():
            param.normal_(0, 1.0)
    return cfg, tokenizer, net


def _first_output(out) -> torch.Tensor:
    return out.logits if "logits" in out else out.start_logits


@pytest.mark.parametrize("case", list(PREFIXED))
def test_the_prefix_reaches_the_model_and_gets_gradients(case, tiny_cfg):
    _, tokenizer, net = _prefixed(tiny_cfg, *PREFIXED[case])
    inputs = tokenizer(["a red cat", "the blue dog is here"], padding=True, return_tensors="pt")
    out = _first_output(net(**inputs))
    with torch.no_grad():
        plain = _first_output(net.get_base_model()(**inputs))
    assert not torch.allclose(out, plain, atol=1e-4), "the prefix changes the output"
    out.sum().backward()
    grads = [p.grad for p in net.prompt_encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads), "the prefix gets gradients"


def _greedy(net: torch.nn.Module, ids: torch.Tensor, steps: int) -> list[int]:
    """Greedy decoding by full forward passes with no cache: what `generate` must reproduce."""
    with torch.no_grad():
        for _ in range(steps):
            logits = net(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    return ids[0, -steps:].tolist()


def _generated(net: torch.nn.Module, ids: torch.Tensor, steps: int) -> list[int]:
    out = net.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                       min_new_tokens=steps, do_sample=False)
    return out[0, -steps:].tolist()


def test_prefix_tuned_decoder_generates_from_its_prefix_also_after_reload(tiny_cfg, tmp_path):
    """transformers passes the running cache to generation as `cache`; without the shim peft looks
    for `past_key_values`, and `generate` silently answers as the bare base model."""
    cfg, tokenizer, net = _prefixed(tiny_cfg, ["model=tiny-llama"], "instruct")
    ids = tokenizer(["red cat blue dog"], return_tensors="pt")["input_ids"]
    expected = _greedy(net, ids, 6)
    assert _generated(net, ids, 6) == expected
    assert _generated(net.get_base_model(), ids, 6) != expected, "the prefix matters here"
    adapters.save_weights(net, tmp_path / "weights")
    reloaded = adapters.load_weights(models.load_model(cfg.model, cfg.task, None, tokenizer),
                                     tmp_path / "weights").eval()
    assert _generated(reloaded, ids, 6) == expected


def test_prefix_tuning_trains_a_roberta_classifier(toy_cfg, spy, client):  # noqa: F811
    cfg = toy_cfg("adapter=prefix", "optim.lr=1e-1", *ROBERTA, *BODY["tiny-bert"])
    train(cfg)
    [run] = train_runs(client)
    assert run.data.params["model.config.model_type"] == "roberta"
    batches, _ = _val_batches(cfg)
    loss_before, _ = _evaluate(spy["before"], batches)
    loss_after, _ = _evaluate(spy["trained"], batches)
    assert loss_after < 0.9 * loss_before, f"{loss_before=:.3f} {loss_after=:.3f}"


def _takes_only_cache(net: PeftModel) -> bool:
    params = inspect.signature(type(net.get_base_model().base_model).forward).parameters
    return "cache" in params and "past_key_values" not in params


def _patched(net: torch.nn.Module) -> bool:
    return any("forward" in vars(module) for module in net.modules())


def test_the_shim_acts_exactly_where_peft_alone_fails(tiny_cfg, monkeypatch):
    """Other methods pass through untouched; prefix models are changed only where the forward takes
    the cache as `cache` alone, and there peft alone refuses (when that stops failing, peft reads
    the new name: delete the shim, see its docstring)."""
    cfg = check_config(tiny_cfg("adapter=lora"))
    tokenizer = models.load_tokenizer(cfg.model)
    lora = get_peft_model(models.load_model(cfg.model, cfg.task, ["a", "b"], tokenizer),
                          adapters.method_of(cfg.adapter).peft_config(None, cfg.model, cfg.task))
    assert compat.restore_past_key_values(lora) is lora and not _patched(lora)

    cfg = check_config(tiny_cfg("adapter=prefix"))
    inputs = tokenizer(["a red cat"], return_tensors="pt")

    def prefixed() -> PeftModel:
        return adapters.apply_adapter(models.load_model(cfg.model, cfg.task, ["a", "b"], tokenizer),
                                      cfg.adapter, cfg.model, cfg.task)
    shimmed = prefixed()
    assert _patched(shimmed) == _takes_only_cache(shimmed)
    shimmed(**inputs)
    monkeypatch.setattr(compat, "PEFT_READS_OLD_NAME_ONLY", (0, 0))   # as on a peft that reads it
    bare = prefixed()
    assert not _patched(bare)
    if _takes_only_cache(bare):
        with pytest.raises(ValueError, match="does not support past key values"):
            bare(**inputs)
