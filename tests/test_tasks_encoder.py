"""Encoder tasks beyond sentiment: many-class intents and extractive QA (windows, labels, em/f1),
fitted for real on tiny-bert and tracked in a real MLflow store; and settings that cannot work."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conftest import prepared_data, train_runs
from tunelab import data
from tunelab.config import ConfigError, check_config
from tunelab.data import synthetic
from tunelab.models.qa_metrics import SquadSpans, squad_scores
from tunelab.train import train

QA_TINY = ["task=qa", "adapter=full", "data.max_length=96", "task.doc_stride=32",
           "data.synthetic.train_size=600", "data.synthetic.eval_size=48", "optim.lr=2e-3"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_generated_intents_are_many_and_balanced():
    rows = synthetic.generate("intent", 3000, seed=0, num_classes=15)
    counts = Counter(row["label"] for row in rows)
    assert len(counts) == 15
    assert max(counts.values()) / len(rows) <= 0.6
    assert len({row["text"] for row in rows}) > 1000, "slot fillers and paraphrases vary the text"
    with pytest.raises(ConfigError, match="task.num_classes"):
        synthetic.generate("intent", 10, seed=0, num_classes=40)


def test_tiny_bert_fits_intent(tiny_cfg, client):
    result = train(tiny_cfg("task=intent", "adapter=full", "trainer.max_steps=200"))
    [run] = train_runs(client)
    metrics = run.data.metrics
    assert run.data.params["task.name"] == "intent" and run.data.params["task.num_classes"] == "15"
    for key in ("val/acc", "val/f1", "val/acc_best", "test/acc", "test/f1"):
        assert 0 <= metrics[key] <= 1, key
    assert result == pytest.approx(metrics["val/acc"])
    assert metrics["val/acc"] > 0.5, "15 intents: chance is ~0.07"


def _qa_features(tiny_cfg, *overrides: str):
    _, raw, task_data, _, dm = prepared_data(tiny_cfg(*QA_TINY, *overrides))
    return raw, task_data, dm


def test_qa_windows_point_at_the_answer(tiny_cfg):
    raw, _, dm = _qa_features(tiny_cfg, "data.max_length=64", "task.doc_stride=16")
    examples, features = raw.splits["validation"], dm.encoded["validation"]
    windows = Counter(features["example_id"])
    assert len(features) > len(examples) and max(windows.values()) >= 2, "contexts are windowed"
    holding = set()
    for feature in features:
        example = examples[feature["example_id"]]
        start, end = feature["start_positions"], feature["end_positions"]
        if start == 0:
            assert end == 0, "a window without the whole answer points at CLS"
            continue
        chars = example["context"][feature["offset_mapping"][start][0]:
                                   feature["offset_mapping"][end][1]]
        assert chars == example["answers"]["text"][0]
        holding.add(feature["example_id"])
    assert holding == set(windows), "every question has a window holding its answer"
    batch = next(iter(dm.val_dataloader()))
    assert batch["offset_mapping"].shape[:2] == batch["input_ids"].shape
    assert (batch["offset_mapping"][batch["attention_mask"] == 0] == -1).all()


def test_squad_em_f1_of_known_predictions():
    """Three questions; the second spans two windows and the later window scores higher."""
    contexts = ["We saw the Eiffel Tower.", "Paris France is big.", "Lyon is south."]
    references = {0: (contexts[0], ["The Eiffel Tower"]), 1: (contexts[1], ["Paris"]),
                  2: (contexts[2], ["Lyon"])}
    spans = [(0, (7, 23), 5.0), (1, (0, 5), 2.0), (1, (0, 12), 4.0), (2, (8, 13), 3.0)]
    length = 6
    starts, ends = torch.full((4, length), -5.0), torch.full((4, length), -5.0)
    offsets = torch.full((4, length, 2), -1)
    for i, (_, (a, b), score) in enumerate(spans):
        offsets[i, 1] = torch.tensor([a, a + 1])
        offsets[i, 2] = torch.tensor([b - 1, b])
        starts[i, 1], ends[i, 2] = score / 2, score / 2
    metric = SquadSpans()
    metric.references = references
    metric.update(starts[:2], ends[:2], offsets[:2], torch.tensor([0, 1]))
    metric.update(starts[2:], ends[2:], offsets[2:], torch.tensor([1, 2]))
    assert metric.predictions() == {0: "the Eiffel Tower", 1: "Paris France", 2: "south"}
    values = metric.compute()
    # em: "the Eiffel Tower" matches after SQuAD normalisation;
    # f1: 1, 2/3 (Paris France vs Paris), 0.
    assert values["em"].item() == pytest.approx(1 / 3)
    assert values["f1"].item() == pytest.approx((1 + 2 / 3 + 0) / 3)


def _write_squad(path: Path, rows: list[dict]) -> None:
    """SQuAD v1.1 nesting: data -> paragraphs -> qas, answers as a list of {text, answer_start}."""
    paragraphs = [{"context": row["context"],
                   "qas": [{"id": row["id"], "question": row["question"],
                            "answers": [{"text": t, "answer_start": s} for t, s in
                                        zip(row["answers"]["text"],
                                            row["answers"]["answer_start"])]}]}
                  for row in rows]
    articles = [{"title": "t", "paragraphs": paragraphs}]
    path.write_text(json.dumps({"version": "1.1", "data": articles}, indent=1))


def test_tiny_bert_fits_qa_on_generated_data(tiny_cfg, client):
    result = train(tiny_cfg(*QA_TINY, "trainer.max_steps=100"))
    [run] = train_runs(client)
    metrics = run.data.metrics
    for key in ("val/em", "val/f1", "val/f1_best", "test/em", "test/f1"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["val/em"] <= metrics["val/f1"]
    assert result == pytest.approx(metrics["val/f1"])
    assert run.data.params["task.monitor"] == "f1" and run.data.params["task.doc_stride"] == "32"
    assert metrics["val/loss"] < 0.8 * math.log(96), "start/end loss well below a uniform guess"


def test_qa_reads_squad_v11_json_files(tiny_cfg, client, tmp_path):
    files = {}
    for offset, (split, size) in enumerate((("train", 64), ("validation", 16), ("test", 16))):
        files[split] = tmp_path / f"{split}-v1.1.json"
        _write_squad(files[split], synthetic.generate("qa", size, seed=100 + offset))
    cfg = tiny_cfg(*QA_TINY, "trainer.max_steps=4", f"data.train_file={files['train']}",
                   f"data.validation_file={files['validation']}", f"data.test_file={files['test']}")
    train(cfg)
    [run] = train_runs(client)
    assert run.info.status == "FINISHED"
    assert {"val/em", "val/f1", "test/em", "test/f1"} <= set(run.data.metrics)
    question = synthetic.generate("qa", 1, seed=101)[0]["question"]
    raw = data.load_splits(check_config(cfg).data, cfg.task, tmp_path / "cache")
    flat = data.task_data_for(raw, cfg.data, cfg.task, cfg.model.family).splits["validation"]
    assert len(flat) == 16 and flat[0]["question"] == question


def test_squad_json_limits_and_hold_out_count_questions(tiny_cfg, tmp_path):
    """`datasets` reads a SQuAD JSON file as one row (`data`): holding out validation and
    data.max_*_samples count its questions, as they count a flat file's rows."""
    train_file, test_file = tmp_path / "train-v1.1.json", tmp_path / "test-v1.1.json"
    _write_squad(train_file, synthetic.generate("qa", 40, seed=100))
    test_rows = synthetic.generate("qa", 16, seed=101)
    _write_squad(test_file, test_rows)
    cfg = check_config(tiny_cfg(*QA_TINY, f"data.train_file={train_file}",
                                f"data.test_file={test_file}", "data.validation_fraction=0.25",
                                "data.max_train_samples=20", "data.max_eval_samples=3"))
    raw = data.load_splits(cfg.data, cfg.task, tmp_path / "cache")
    assert {split: len(ds) for split, ds in raw.splits.items()} == \
        {"train": 20, "validation": 3, "test": 3}
    assert raw.selection["test"] == ["first 3 rows"]
    flat = data.task_data_for(raw, cfg.data, cfg.task, cfg.model.family).splits
    assert flat["test"]["question"] == [row["question"] for row in test_rows[:3]]
    assert {len(flat[split]) for split in ("train", "validation")} == {20, 3} and \
        not set(flat["train"]["id"]) & set(flat["validation"]["id"]), "held out, not shared"


def test_qa_answer_missing_from_context_names_file_and_row(tiny_cfg, client, tmp_path):
    train_file = tmp_path / "qa.csv"
    train_file.write_text("question,context,answer\nWho?,Ada wrote it.,Ada\n"
                          "Where?,She lived in Rome.,Paris\n")
    dev_file = tmp_path / "dev.csv"
    dev_file.write_text("question,context,answer\nWho?,Bo wrote it.,Bo\n")
    with pytest.raises(ConfigError, match=r"row 1 .*'Paris' is not in its context") as err:
        train(tiny_cfg(*QA_TINY, f"data.train_file={train_file}",
                       f"data.validation_file={dev_file}"))
    assert str(train_file) in str(err.value) and err.value.key == "data.train_file"
    assert train_runs(client) == [], "nothing starts"


# Model x task pairs no family serves are covered by tests/test_matrix.py.
@pytest.mark.parametrize("overrides, key, hint", [
    (["model=tiny-llama", "task=qa", "task.head=span"], "task.head", "model=minilm"),
    (["model=lstm", "task=intent", "adapter=lora"], "adapter", "only adapter=full"),
    (["task=qa", "data.max_length=64", "task.doc_stride=40"], "task.doc_stride", "[1, 32)"),
])
def test_pairs_that_cannot_work_are_rejected(overrides, key, hint, tiny_cfg):
    with pytest.raises(ConfigError) as err:
        check_config(tiny_cfg(*overrides))
    assert err.value.key == key and hint in str(err.value)


def first_sentence_f1(references: dict[int, tuple[str, list[str]]]) -> float:
    """The baseline a span model must beat: answer each question with its context's first
    sentence."""
    predicted = {row: context.split(". ")[0] for row, (context, _) in references.items()}
    golds = {row: answers for row, (_, answers) in references.items()}
    return squad_scores(predicted, golds)["f1"].item()


@pytest.mark.slow
def test_minilm_qa_beats_the_first_sentence_baseline(tiny_cfg, client, capsys):
    cfg = tiny_cfg("model=minilm", "task=qa", "adapter=full", "trainer.max_steps=300",
                   "data.max_length=128", "data.batch_size=16", "optim.lr=1e-4",
                   "data.synthetic.train_size=2000", "data.synthetic.eval_size=200")
    train(cfg)
    [run] = train_runs(client)
    checked = check_config(cfg)
    raw = data.load_splits(checked.data, checked.task, Path(checked.paths.cache_dir))
    task_data = data.task_data_for(raw, checked.data, checked.task, checked.model.family)
    baseline = first_sentence_f1(task_data.references("validation"))
    metrics = run.data.metrics
    with capsys.disabled():
        print(f"\nminilm qa: val/f1={metrics['val/f1']:.3f} val/em={metrics['val/em']:.3f} "
              f"test/f1={metrics['test/f1']:.3f} first-sentence f1={baseline:.3f}")
    assert metrics["val/f1"] > baseline + 0.3
