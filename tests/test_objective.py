"""The study's joint objective (task loss + λ·self-supervised loss) and `model.init_from`, through
real fits of tiny models tracked in a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import train_runs
from tunelab import models
from tunelab.config import ConfigError, check_config
from tunelab.models.objective import IGNORE, SelfSupervised
from tunelab.train import train

SMALL = ["adapter=full", "data.batch_size=8", "data.synthetic.train_size=160",
         "data.synthetic.eval_size=16", "data.max_length=32"]


def test_mlm_masking_skips_special_and_padding_and_repeats_in_eval(tiny_cfg):
    cfg = check_config(tiny_cfg())
    tokenizer = models.load_tokenizer(cfg.model)
    batch = dict(tokenizer(["the movie was great and the staff were lovely"] * 64 +
                           ["short"] * 64, padding=True, return_tensors="pt"))
    objective = SelfSupervised(tokenizer, "encoder", 0.15)
    masked, labels = objective.mask(batch)
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    chosen = labels != IGNORE
    assert not (chosen & special).any() and not (chosen & (batch["attention_mask"] == 0)).any()
    assert torch.equal(labels[chosen], batch["input_ids"][chosen])
    rate = chosen.sum() / (~special & (batch["attention_mask"] == 1)).sum()
    assert 0.10 < float(rate) < 0.20
    assert (masked[chosen] == tokenizer.mask_token_id).float().mean() > 0.7, "BERT's 80% [MASK]"
    first, second = (objective.mask(batch, deterministic=True) for _ in range(2))
    assert torch.equal(first[1], second[1]), "validation masks are the same every time"


def test_decoder_self_supervised_loss_is_the_same_on_either_padding_side(tiny_cfg):
    """Left padding (prompt-tuned decoder classifiers use it) scores the same next tokens as right
    padding: a row's first token has no real token before it on either side."""
    cfg = check_config(tiny_cfg("model=tiny-llama", "task=lm"))
    tokenizer = models.load_tokenizer(cfg.model)
    net = models.load_model(cfg.model, cfg.task, None, tokenizer).eval()
    objective = SelfSupervised(tokenizer, "decoder", 0.15)
    texts = ["the staff were lovely and the room was clean", "great"]
    losses = []
    for side in ("right", "left"):
        batch = dict(tokenizer(texts, padding=True, padding_side=side, return_tensors="pt"))
        with torch.no_grad():
            losses.append(objective.loss(net, batch, net(**batch)))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama"])
def test_aux_weight_logs_task_and_aux_losses_that_sum(model, tiny_cfg, client):
    cfg = tiny_cfg(f"model={model}", *SMALL, "objective.aux_weight=0.5", "trainer.max_steps=6",
                   "trainer.log_every_n_steps=2")
    train(cfg)
    [run] = train_runs(client)
    assert run.data.params["objective.aux_weight"] == "0.5"
    history = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
               for key in ("train/loss", "train/task_loss", "train/aux_loss")}
    assert list(history["train/loss"]) == [2, 4, 6]
    for step, total in history["train/loss"].items():
        task, aux = history["train/task_loss"][step], history["train/aux_loss"][step]
        assert total == pytest.approx(task + 0.5 * aux, rel=1e-5)
        assert 5 < aux < 12, "a vocabulary-sized cross-entropy, near ln(30522) untrained"
    assert "val/acc" in run.data.metrics


def test_without_aux_weight_no_aux_losses(tiny_cfg, client):
    train(tiny_cfg(*SMALL, "trainer.max_steps=4", "trainer.log_every_n_steps=2"))
    [run] = train_runs(client)
    assert "train/loss" in run.data.metrics
    assert "train/aux_loss" not in run.data.metrics and "train/task_loss" not in run.data.metrics


def _artifact_tensors(cfg, run_id: str) -> dict[str, torch.Tensor]:
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="weights",
                                                      tracking_uri=cfg.tracking.uri))
    return load_file(str(folder / "model.safetensors"))


def test_init_from_run_id_starts_from_that_runs_weights(tiny_cfg, client):
    """Continued pretraining (task=lm) feeds a sentiment fine-tune by run id; with a vanishing
    learning rate the fine-tune's saved encoder equals the lm run's, not a fresh random init."""
    pretrain = tiny_cfg("task=lm", *SMALL, "trainer.max_steps=4")
    train(pretrain)
    [lm_run] = train_runs(client)
    finetune = tiny_cfg(*SMALL, "trainer.max_steps=2", "optim.lr=1e-12",
                        f"model.init_from={lm_run.info.run_id}")
    train(finetune)
    [ft_run] = [r for r in train_runs(client) if r.info.run_id != lm_run.info.run_id]
    assert ft_run.data.params["model.init_from"] == lm_run.info.run_id
    key = "bert.encoder.layer.0.attention.self.query.weight"
    start = _artifact_tensors(pretrain, lm_run.info.run_id)[key]
    end = _artifact_tensors(finetune, ft_run.info.run_id)[key]
    checked = check_config(tiny_cfg())
    fresh = models.load_model(checked.model, checked.task, ["a", "b"],
                              models.load_tokenizer(checked.model)).state_dict()[key]
    assert torch.allclose(start, end, atol=1e-6)
    assert not torch.allclose(fresh, end, atol=1e-3), "not the seed's random init"


def test_init_from_an_unknown_run_stops_before_training(tiny_cfg, client):
    with pytest.raises(ConfigError, match="model.init_from"):
        train(tiny_cfg(*SMALL, "model.init_from=0123456789abcdef0123456789abcdef"))
    assert train_runs(client) == []


def test_init_from_a_lora_run_merges_its_adapter(tiny_cfg, client):
    cfg = tiny_cfg("model=tiny-llama", "task=lm", "adapter=lora", "adapter.dropout=0.0",
                   "optim.lr=1e-2", *SMALL[1:], "trainer.max_steps=3")
    train(cfg)
    [run] = train_runs(client)
    checked = check_config(cfg)
    tokenizer = models.load_tokenizer(checked.model)
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                      artifact_path="weights",
                                                      tracking_uri=cfg.tracking.uri))
    base = models.load_model(checked.model, checked.task, None, tokenizer)
    merged = models.load_model(checked.model, checked.task, None, tokenizer, weights=str(folder))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert type(merged).__name__ == "LlamaForCausalLM", "a plain model: the adapter is merged"
    assert not torch.allclose(base.state_dict()[key], merged.state_dict()[key])
    assert torch.equal(base.state_dict()["model.layers.0.mlp.up_proj.weight"],
                       merged.state_dict()["model.layers.0.mlp.up_proj.weight"])
