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
from tunelab import adapters, build, models
from tunelab.adapters import METHODS
from tunelab.adapters.method import PeftMethod
from tunelab.config import ConfigError, check_config
from tunelab.deploy.classifier import load_trained_tokenizer
from tunelab.train import train

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
ANIMALS = ["cat", "dog", "horse", "cow", "bird", "fish", "sheep", "lion"]
# A random-init body carries its input only with a wider init than transformers' 0.02 (at 0.02 the
# pooled features of different inputs differ by ~0.1%) and, for BERT, without dropout, which
# otherwise drowns that signal: measured, the linear probe learns nothing in 30 steps without these.
BODY = {"tiny-bert": ["+model.config.initializer_range=0.2", "+model.config.hidden_dropout_prob=0",
                      "+model.config.attention_probs_dropout_prob=0"],
        "tiny-llama": ["+model.config.initializer_range=0.2"]}
# Rates for these random bodies on the toy task (the presets' rates are for pretrained ones).
LR = {"full": 1e-2, "lora": 1e-2, "dora": 1e-2, "prefix": 1e-1, "prompt": 3e-2, "ia3": 1e-1,
      "bitfit": 3e-2, "head": 1e-1, "rslora": 1e-2, "pissa": 1e-2, "loha": 1e-2, "oft": 1e-2,
      "vera": 1e-1, "ln-tuning": 3e-2}
assert set(LR) == set(METHODS), "every registered method trains on both models here"
# tiny-llama has no biases (bitfit is rejected there, see below); Qwen2-style attention biases qualify.
EXTRA = {("tiny-llama", "bitfit"): ["+model.config.attention_bias=true"]}
# Each peft method's merge rule (its module's `merges`), as export applies it through adapters.merge.
MERGING = [m for m, cls in METHODS.items() if issubclass(cls, PeftMethod) and cls.merges]
NOT_MERGING = [m for m, cls in METHODS.items() if not cls.merges]

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


def _tokenizer(cfg: DictConfig):
    """The tokenizer as the run loads it (padded on the side its adapter needs)."""
    return build.build_tokenizer(cfg)


def _val_batches(cfg: DictConfig) -> tuple[list[dict], list[str]]:
    """The validation batches and label names, rebuilt from the config as the run built them."""
    cfg = check_config(cfg)
    inputs = build.build_data(cfg)
    dm = build.build_datamodule(cfg, inputs, _tokenizer(cfg), batch_size=32)
    dm.setup()
    return list(dm.val_dataloader()), inputs.label_names


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
    return models.load_model(cfg.model, cfg.task, labels, _tokenizer(cfg), cfg.seed, weights=None if weights is None else str(weights))


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama"])
@pytest.mark.parametrize("method", list(LR))
def test_method_trains_only_its_parameters_and_reloads(method, model, toy_cfg, spy, client,
                                                       tmp_path):
    cfg = toy_cfg(f"model={model}", f"adapter={method}", f"optim.lr={LR[method]}", *BODY[model],
                  *EXTRA.get((model, method), []))
    train(cfg)
    [run] = train_runs(client)
    metrics = run.data.metrics
    trained, before = spy["trained"], spy["before"]
    batches, labels = _val_batches(cfg)

    loss_before, _ = _evaluate(before, batches)
    loss_after, logits = _evaluate(trained, batches)
    assert loss_after < 0.9 * loss_before, f"{method} on {model}: {loss_before=:.3f} {loss_after=:.3f}"
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


@pytest.mark.parametrize("method", MERGING)
def test_merged_adapter_gives_the_same_logits(method, toy_cfg):
    cfg = check_config(toy_cfg(f"adapter={method}", *BODY["tiny-bert"]))
    net = adapters.apply_adapter(_fresh_model(cfg, ["animal", "colour"]), cfg.adapter, cfg.model,
                                 cfg.task)
    with torch.no_grad():   # move the adapter off its identity init, as training would
        for name, param in net.named_parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn_like(param))
    batches, _ = _val_batches(cfg)
    _, unmerged = _evaluate(net, batches)
    merged = adapters.merge(net)
    assert not isinstance(merged, PeftModel)
    assert not any(tag in n for n, _ in merged.named_parameters()
                   for tag in ("lora_", "ia3_", "hada_", "oft_", "vera_", "ln_tuning_"))
    _, merged_logits = _evaluate(merged, batches)
    torch.testing.assert_close(merged_logits, unmerged, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_qa_weight_adapters_read_segment_ids_and_train_the_span_head(method, tiny_cfg, tmp_path):
    cfg = check_config(tiny_cfg("task=qa", f"adapter={method}", "task.doc_stride=8"))
    tokenizer = models.load_tokenizer(cfg.model)
    net = adapters.apply_adapter(models.load_model(cfg.model, cfg.task, [], tokenizer),
                                 cfg.adapter, cfg.model, cfg.task).eval()
    inputs = tokenizer(["who?"], ["a context of a few words"], return_tensors="pt")
    with torch.no_grad():
        as_given = net(**inputs).start_logits
        one_segment = net(**{**inputs, "token_type_ids": torch.zeros_like(inputs["input_ids"])})
    assert not torch.allclose(as_given, one_segment.start_logits), \
        "the question/context segment ids reach the base model"
    trained = {name for name, param in net.named_parameters() if param.requires_grad}
    assert any("qa_outputs" in name for name in trained), "the new span head trains"
    size = adapters.save_weights(net, tmp_path / "weights", tokenizer)
    reloaded = adapters.load_weights(models.load_model(cfg.model, cfg.task, [], tokenizer),
                                     tmp_path / "weights").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).start_logits, as_given)
    assert size > 0


def test_prompt_tuned_decoder_classifier_reads_each_rows_own_last_token(toy_cfg, spy, client,
                                                                       tmp_path):
    """Prompt tuning feeds a decoder classifier embeddings, so transformers cannot see the pads and
    pools the last position: the run pads left, so that position is the row's own last token and
    a row's logits never depend on padding; the saved tokenizer pads as training did."""
    cfg = toy_cfg("model=tiny-llama", "adapter=prompt", *BODY["tiny-llama"], "trainer.max_steps=2")
    train(cfg)
    [run] = train_runs(client)
    weights = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="weights",
                                                  dst_path=str(tmp_path / "dl"),
                                                  tracking_uri=cfg.tracking.uri)
    tokenizer = load_trained_tokenizer(Path(weights))
    net = spy["trained"].eval()
    batch = tokenizer(["red cat", "blue dog green horse white sheep lion"], padding=True,
                      return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum(), "row 0 is padded"
    with torch.no_grad():
        before = net(**batch).logits
        net.get_input_embeddings().weight[tokenizer.pad_token_id] += 1.0
        after = net(**batch).logits
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    assert tokenizer.padding_side == "left"
    assert adapters.padding_side(check_config(toy_cfg("model=tiny-llama", "adapter=lora")).adapter,
                                 cfg.model, cfg.task) is None, "ids reach the model: pads found"


@pytest.mark.parametrize("method", NOT_MERGING)
def test_adapters_whose_method_does_not_merge_refuse_to(method, toy_cfg):
    cfg = check_config(toy_cfg(f"adapter={method}"))
    net = adapters.apply_adapter(_fresh_model(cfg, ["animal", "colour"]), cfg.adapter, cfg.model,
                                 cfg.task)
    with pytest.raises(ValueError, match="cannot be merged"):
        adapters.merge(net)


GPT2 = ["model=tiny-llama", "model.config.model_type=gpt2"]    # tiny-llama's sizes, GPT-2's modules


@pytest.mark.parametrize("overrides, key, hint", [
    (["model=tiny-llama", "adapter=lora", "adapter.target_modules=[query,value]"],
     "adapter.target_modules", "q_proj"),
    (["model=tiny-bert", "adapter=dora", "adapter.target_modules=[q_proj]"],
     "adapter.target_modules", "attention.self.query"),
    (["model=tiny-bert", "adapter=ia3", "adapter.feedforward_modules=[intermediate.dense]"],
     "adapter.feedforward_modules", "subset"),
    (["model=tiny-llama", "adapter=bitfit"], "adapter", "adapter=head"),
    (["adapter=prefix", "model.gradient_checkpointing=true"], "model.gradient_checkpointing",
     "adapter=lora"),
    (["model=tiny-bert", "adapter=oft", "adapter.oft_block_size=48"], "adapter.oft_block_size",
     "a divisor of the in_features"),
    (["model=tiny-llama", "adapter=ln-tuning", "adapter.target_modules=[LayerNorm]"],
     "adapter.target_modules", "input_layernorm"),
    (["model=tiny-bert", "adapter=vera", "adapter.target_modules=[q_proj]"],
     "adapter.target_modules", "attention.self.query"),
    # GPT-2's attention is transformers' Conv1D, which peft's LoHa and OFT cannot adapt
    ([*GPT2, "adapter=loha", "adapter.target_modules=[c_attn]"], "adapter", "Conv1D"),
    ([*GPT2, "adapter=oft", "adapter.target_modules=[c_attn]"], "adapter", "Conv1D"),
])
def test_impossible_combinations_stop_before_weights_load(overrides, key, hint, toy_cfg, client,
                                                          monkeypatch):
    loads = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a))
    with pytest.raises(ConfigError) as err:
        train(toy_cfg(*overrides))
    assert err.value.key == key and hint in err.value.allowed
    assert loads == [] and train_runs(client) == [], "nothing loaded, no run recorded"


@pytest.mark.slow
def test_prefix_tuning_trains_pretrained_minilm(toy_cfg, spy, client):
    """Prefix tuning on a real pretrained BERT-style encoder: the path transformers 5.x breaks."""
    cfg = toy_cfg("model=minilm", "adapter=prefix", "optim.lr=3e-2")
    train(cfg)
    [run] = train_runs(client)
    batches, _ = _val_batches(cfg)
    loss_before, _ = _evaluate(spy["before"], batches)
    loss_after, _ = _evaluate(spy["trained"], batches)
    assert loss_after < 0.8 * loss_before, f"{loss_before=:.3f} {loss_after=:.3f}"
    assert run.data.metrics["params/trainable_pct"] < 1
