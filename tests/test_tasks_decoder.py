"""The generative side: instruct and lm on tiny models through `tunelab.train.train`, response-only
loss masking on a real collated batch, classification by generating the label, qa by writing the
answer, and (slow) the offline SmolLM2-135M instruct run with LoRA."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import mlflow
import pytest
import torch

from tests.conftest import prepared_data, train_runs
from tunelab import adapters, models
from tunelab.data.generative import IGNORE, end_of_turn_id
from tunelab.models.generative import ExactMatch, GenerativeHead
from tunelab.models.qa_metrics import SquadAnswers
from tunelab.train import train

# Few steps on a small batch: a 30k-token vocabulary makes every decoder step cost far more
# than tiny-llama's two 64-wide layers.
SMALL = ["adapter=full", "optim.lr=1e-2", "data.batch_size=8", "data.synthetic.train_size=400",
         "data.synthetic.eval_size=16", "data.max_length=48", "trainer.log_every_n_steps=5"]


def _history(client, run, key: str) -> list[float]:
    return [m.value for m in client.get_metric_history(run.info.run_id, key)]


def _encoded(cfg, split: str = "train"):
    return prepared_data(cfg)


def test_instruct_batch_has_loss_on_response_tokens_only(tiny_cfg):
    cfg, raw, _, tokenizer, dm = _encoded(tiny_cfg("model=tiny-llama", "task=instruct", *SMALL))
    batch = next(iter(dm.val_dataloader()))
    rows = raw.splits["validation"].select(range(8))
    stop = end_of_turn_id(tokenizer)
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max()), "padded to the longest row only"
    assert int(lengths.min()) < int(lengths.max())
    for i, row in enumerate(rows):
        n, length = int(batch["prompt_length"][i]), int(lengths[i])
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        assert (labels[:n] == IGNORE).all() and (labels[length:] == IGNORE).all()
        assert torch.equal(labels[n:length], ids[n:length]), "response tokens are their own targets"
        prompt_text = tokenizer.decode(ids[:n])
        response = tokenizer.decode(labels[n:length][labels[n:length] != stop])
        assert row["prompt"].lower().split()[-1] in prompt_text and "assistant" in prompt_text
        assert response.replace(" ", "") == row["response"].lower().replace(" ", "")
        assert int(labels[length - 1]) == stop, "the end-of-turn marker is learnt, so answers stop"


def test_tiny_llama_instruct_fits_logs_ppl_and_em(tiny_cfg, client):
    cfg = tiny_cfg("model=tiny-llama", "task=instruct", *SMALL, "trainer.max_steps=20",
                   "task.generate_eval_samples=16", "task.max_new_tokens=12")
    result = train(cfg)
    [run] = train_runs(client)
    metrics = run.data.metrics
    assert run.info.status == "FINISHED"
    for key in ("val/ppl", "test/ppl", "val/em", "test/em", "val/ppl_best", "val/loss"):
        assert key in metrics, key
    assert result == pytest.approx(metrics["val/ppl"])
    assert 0 <= metrics["val/em"] <= 1 and 0 <= metrics["test/em"] <= 1
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-3)
    losses = _history(client, run, "train/loss")
    assert sum(losses[-2:]) / 2 < 0.75 * losses[0], losses
    assert metrics["val/ppl"] < 1000, "the response vocabulary is small: ppl falls far below 30k"


def test_greedy_answers_are_scored_against_the_reference(tiny_cfg):
    """em compares greedy answers, cut at the end-of-turn marker, with the decoded references,
    SQuAD-normalised."""
    cfg, _, _, tokenizer, dm = _encoded(tiny_cfg("model=tiny-llama", "task=instruct", *SMALL))
    head = GenerativeHead(cfg.task, tokenizer, "decoder", cfg.objective, None)
    batch = next(iter(dm.val_dataloader()))
    refs = head.references(batch, 4)
    assert all(refs) and all("[SEP]" not in r for r in refs)
    net = models.load_model(cfg.model, cfg.task, None, tokenizer).eval()
    answers = head.generate(net, batch, 4)
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
    em = ExactMatch()
    em.update(refs, refs)
    assert float(em.compute()) == 1.0
    em = ExactMatch()
    em.update(["The Belmek.", "osslo"], ["belmek", "tepuk"])
    assert float(em.compute()) == 0.5, "SQuAD normalisation: case, articles, punctuation"


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bert"])
def test_lm_fits_next_token_or_masked(model, tiny_cfg, client):
    cfg = tiny_cfg(f"model={model}", "task=lm", *SMALL, "trainer.max_steps=15")
    train(cfg)
    [run] = train_runs(client)
    metrics = run.data.metrics
    assert {"val/ppl", "test/ppl", "val/ppl_best"} <= set(metrics)
    losses = _history(client, run, "train/loss")
    assert losses[-1] < 0.8 * losses[0], losses   # masked LM learns slower: 15% of tokens teach
    assert metrics["val/ppl"] < 2000, "far below the uniform 30k of an untrained model"
    weights = Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="weights", tracking_uri=cfg.tracking.uri))
    arch = json.loads((weights / "config.json").read_text())["architectures"]
    assert arch == ["BertForMaskedLM" if model == "tiny-bert" else "LlamaForCausalLM"]


def test_label_scores_are_each_labels_log_likelihood(tiny_cfg):
    cfg, _, task_data, tokenizer, dm = _encoded(
        tiny_cfg("model=tiny-llama", "task=sentiment", "task.head=generate", *SMALL))
    head = GenerativeHead(cfg.task, tokenizer, "decoder", cfg.objective, task_data.label_names)
    net = models.load_model(cfg.model, cfg.task, None, tokenizer).eval()
    batch = next(iter(dm.val_dataloader()))
    scores = head.score_labels(net, batch)
    assert scores.shape == (8, len(task_data.label_names))
    for i in range(3):   # the true label's score is its tokens' summed log-likelihood
        n = int(batch["attention_mask"][i].sum())
        labels = batch["labels"][i:i + 1, :n]
        with torch.no_grad():
            loss = net(input_ids=batch["input_ids"][i:i + 1, :n], labels=labels).loss
        expected = -float(loss) * int((labels != IGNORE).sum())
        assert float(scores[i, batch["class_label"][i]]) == pytest.approx(expected, rel=1e-4)


def test_decoder_classifies_by_generating_the_label(tiny_cfg, client):
    cfg = tiny_cfg("model=tiny-llama", "task=sentiment", "task.head=generate", *SMALL,
                   "trainer.max_steps=15")
    train(cfg)
    [run] = train_runs(client)
    metrics = run.data.metrics
    assert {"val/acc", "val/f1", "test/acc", "test/f1", "val/acc_best"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("val/acc", "val/f1", "test/acc", "test/f1"))
    losses = _history(client, run, "train/loss")
    assert sum(losses[-2:]) / 2 < 0.5 * losses[0], losses


@pytest.mark.slow
def test_smollm2_instruct_lora_offline(tiny_cfg, client, capsys):
    start = time.perf_counter()
    cfg = tiny_cfg("model=smollm2-135m", "task=instruct", "adapter=lora", "optim.lr=1e-3",
                   "adapter.dropout=0.0", "data.batch_size=4", "data.synthetic.train_size=120",
                   "data.synthetic.eval_size=8", "data.max_length=80", "trainer.max_steps=12",
                   "trainer.val_check_interval=6", "trainer.log_every_n_steps=3",
                   "task.generate_eval_samples=4", "task.max_new_tokens=16")
    train(cfg)
    [run] = train_runs(client)
    ppl = _history(client, run, "val/ppl")
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and len(ppl) == 2 and ppl[-1] < ppl[0], ppl
    weights = Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="weights", tracking_uri=cfg.tracking.uri))
    assert adapters.is_adapter_folder(weights)

    checked, _, _, tokenizer, dm = _encoded(cfg)
    base = models.load_model(checked.model, checked.task, None, tokenizer)
    batch = next(iter(dm.val_dataloader()))
    head = GenerativeHead(checked.task, tokenizer, "decoder", checked.objective, None)
    before = _val_loss(base, batch)
    tuned = adapters.load_weights(base, weights).eval()
    after = _val_loss(tuned, batch)
    answers = head.generate(tuned, batch, 4)
    refs = head.references(batch, 4)
    with capsys.disabled():
        print(f"\nsmollm2 instruct lora: val/ppl {ppl} val/em {metrics['val/em']} "
              f"test/em {metrics['test/em']} batch loss {before:.3f} -> {after:.3f} "
              f"answers {answers} refs {refs} in {time.perf_counter() - start:.0f}s")
    assert after < before, "the trained adapter lowers the response loss of the base model"
    assert all(isinstance(a, str) for a in answers) and any(answers)


@torch.no_grad()
def _val_loss(net, batch) -> float:
    net.eval()
    return float(net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).loss)


# Generated QA prompts are 136-166 tokens through tiny-llama's template: 176 keeps them whole.
QA = ["model=tiny-llama", "task=qa", *SMALL, "data.max_length=176", "task.max_new_tokens=8"]


def test_qa_batch_has_loss_on_answer_tokens_only(tiny_cfg):
    cfg, raw, _, tokenizer, dm = _encoded(tiny_cfg(*QA, "data.synthetic.train_size=16"))
    assert cfg.task.head == "generate", "task=qa on a decoder needs no task.head"
    batch = next(iter(dm.val_dataloader()))
    rows = raw.splits["validation"].select(range(8))
    stop = end_of_turn_id(tokenizer)
    lengths = batch["attention_mask"].sum(1)
    for i, row in enumerate(rows):
        n, length = int(batch["prompt_length"][i]), int(lengths[i])
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        assert int(batch["example_id"][i]) == row["row"], "the metric finds every gold by row"
        assert (labels[:n] == IGNORE).all() and (labels[length:] == IGNORE).all()
        assert torch.equal(labels[n:length], ids[n:length]), "answer tokens are their own targets"
        prompt = tokenizer.decode(ids[:n]).replace(" ", "")
        assert row["context"].lower().replace(" ", "") in prompt
        assert prompt.endswith(row["question"].lower().replace(" ", "") + "[SEP]<|assistant|>")
        answer = tokenizer.decode(labels[n:length - 1]).replace(" ", "")
        assert answer == row["answers"]["text"][0].lower().replace(" ", "")
        assert int(labels[length - 1]) == stop, "the end-of-turn marker is learnt, so answers stop"

    _, _, _, tokenizer, dm = _encoded(tiny_cfg(*QA, "data.synthetic.train_size=16",
                                               "data.max_length=64"))
    batch = next(iter(dm.val_dataloader()))
    prompt = tokenizer.decode(batch["input_ids"][0][:int(batch["prompt_length"][0])])
    assert len(batch["input_ids"][0]) <= 64
    assert prompt.replace(" ", "").endswith(
        rows[0]["question"].lower().replace(" ", "") + "[SEP]<|assistant|>"), \
        "an over-long prompt loses the context's start, never the question"


def test_unanswerable_qa_rows_teach_the_empty_answer(tiny_cfg, tmp_path):
    """SQuAD v2's convention: an empty answer is written as the end-of-turn marker alone."""
    train_file = tmp_path / "qa.csv"
    train_file.write_text("question,context,answer\nWho wrote it?,Ada wrote it.,Ada\n"
                          "Who sang?,Ada wrote it.,\n")
    _, _, task_data, tokenizer, dm = _encoded(tiny_cfg(
        *QA, f"data.train_file={train_file}", f"data.validation_file={train_file}"))
    batch = next(iter(dm.val_dataloader()))
    answer_ids = [batch["labels"][i][batch["labels"][i] != IGNORE].tolist() for i in range(2)]
    stop = end_of_turn_id(tokenizer)
    assert answer_ids[1] == [stop] and answer_ids[0][-1] == stop and len(answer_ids[0]) > 1
    assert task_data.references("validation") == {0: ("Ada wrote it.", ["Ada"]),
                                                  1: ("Ada wrote it.", [])}


def test_generated_qa_answers_are_scored_against_every_gold():
    metric = SquadAnswers()
    metric.references = {0: ("", ["Paris", "Paris France"]), 1: ("", []), 2: ("", ["Nice"]),
                         3: ("", ["Lyon"])}
    metric.update(["Paris France.", ""], [0, 1])
    metric.update(["Lyon", "south of Lyon"], [2, 3])
    values = metric.compute()
    # em: the second gold, the empty answer to an unanswerable row; f1 adds 2 * (1/3 * 1) / (4/3).
    assert values["em"].item() == pytest.approx(2 / 4)
    assert values["f1"].item() == pytest.approx((1 + 1 + 0 + 0.5) / 4)


def test_tiny_llama_learns_generative_qa(tiny_cfg, client, one_thread, capsys):
    """A few dozen steps take the answer-token loss from the untrained model's ~ln(vocab) to below
    half of it, still falling between validations. A 2-layer, 64-wide random-init decoder learns
    the answers' form (a city for where, a year for when) long before it learns to copy the right
    one from the context, so f1 is reported but only bounded here."""
    cfg = tiny_cfg(*QA, "data.synthetic.train_size=400", "data.batch_size=4",
                   "trainer.max_steps=40", "trainer.val_check_interval=20",
                   "task.generate_eval_samples=16")
    result = train(cfg)
    [run] = train_runs(client)
    metrics = run.data.metrics
    assert run.data.params["task.head"] == "generate"
    assert result == pytest.approx(metrics["val/f1"])
    for key in ("val/em", "val/f1", "val/f1_best", "test/em", "test/f1"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["val/em"] <= metrics["val/f1"]
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-3)
    val_loss = _history(client, run, "val/loss")
    untrained = math.log(30522)     # MiniLM's vocabulary, near-uniform at random init
    with capsys.disabled():
        print(f"\ntiny-llama qa: train/loss {_history(client, run, 'train/loss')} val/loss "
              f"{val_loss} val/f1 {_history(client, run, 'val/f1')} test/f1 {metrics['test/f1']}")
    assert len(val_loss) == 2 and val_loss[-1] < val_loss[0] < 0.5 * untrained, val_loss


@pytest.mark.slow
def test_smollm2_generative_qa_lora_beats_the_model_it_started_from(tiny_cfg, client, capsys):
    """The study's decoder on QA: SmolLM2-135M-Instruct answers generated SQuAD-format questions by
    writing the answer; a short LoRA fit raises its val/f1 above the untrained model's (the same
    pipeline, one step at a negligible learning rate) on the same validation rows."""
    start = time.perf_counter()
    common = ["model=smollm2-135m", "task=qa", "adapter=lora", "adapter.dropout=0.0",
              "data.synthetic.train_size=400", "data.synthetic.eval_size=32",
              "data.max_length=224", "task.generate_eval_samples=32", "task.max_new_tokens=12",
              "trainer.log_every_n_steps=5"]
    untrained = train(tiny_cfg(*common, "optim.lr=1e-12", "trainer.max_steps=1",
                               "data.batch_size=4", "tracking.experiment=untrained"))
    tuned = train(tiny_cfg(*common, "optim.lr=1e-3", "trainer.max_steps=40",
                           "data.batch_size=4", "trainer.val_check_interval=20"))
    [run] = train_runs(client)
    f1 = _history(client, run, "val/f1")
    with capsys.disabled():
        print(f"\nsmollm2 qa lora: untrained val/f1 {untrained:.3f}, tuned val/f1 {f1} "
              f"test/f1 {run.data.metrics['test/f1']:.3f} test/em {run.data.metrics['test/em']:.3f}"
              f" val/loss {_history(client, run, 'val/loss')} in "
              f"{time.perf_counter() - start:.0f}s")
    assert run.info.status == "FINISHED" and tuned == pytest.approx(f1[-1])
    assert f1[-1] > untrained + 0.1, (untrained, f1)


@pytest.mark.slow
def test_smollm2_full_fine_tune_saves_weights_that_reload(tiny_cfg, client):
    """The GGUF preset loads dequantized to float; a full fine-tune must save and reload those
    weights (transformers leaves its GGUF quantizer on the model, which refuses to save)."""
    cfg = tiny_cfg("model=smollm2-135m", "task=sentiment", "adapter=full", "data.batch_size=2",
                   "data.synthetic.train_size=8", "data.synthetic.eval_size=4",
                   "data.max_length=32", "trainer.max_steps=2")
    train(cfg)
    [run] = train_runs(client)
    assert run.info.status == "FINISHED"
    weights = Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="weights", tracking_uri=cfg.tracking.uri))
    checked, _, _, tokenizer, _ = _encoded(cfg)
    base = models.load_model(checked.model, checked.task, None, tokenizer)
    tuned = models.load_model(checked.model, checked.task, None, tokenizer, weights=str(weights))
    assert getattr(tuned, "hf_quantizer", None) is None
    assert "quantization_config" not in tuned.config.to_dict()
    changed = [name for (name, p), q in zip(base.named_parameters(), tuned.parameters())
               if not torch.equal(p, q)]
    assert changed, "the saved weights are the trained ones, not the base's"
