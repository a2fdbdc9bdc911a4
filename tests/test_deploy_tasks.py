"""Evaluate and deploy beyond classification: extractive QA on tiny-bert, instruct and lm on
tiny-llama, trained a few steps in one real store; exports loaded through MLflow's pyfunc are
checked against what the trained model produces through the training code itself, merged against
unmerged, a real `mlflow models serve` answers QA, and eval runs match validation."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from tests.conftest import TINY, compose_cfg, prepared_data
from tests.test_deploy import _serve_and_post
from tunelab import adapters, models
from tunelab.deploy.cli import eval_main, predict_main
from tunelab.deploy.export import export
from tunelab.deploy.runs import connect
from tunelab.models.generative import GenerativeHead
from tunelab.models.qa_metrics import SquadSpans, bind_references
from tunelab.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

QA = ["task=qa", "adapter=lora", "data.max_length=96", "task.doc_stride=32", "optim.lr=2e-3",
      "data.synthetic.train_size=240", "data.synthetic.eval_size=24", "data.batch_size=8",
      "trainer.max_steps=12"]
LLAMA = ["model=tiny-llama", "optim.lr=3e-2", "data.batch_size=8", "data.synthetic.train_size=160",
         "data.synthetic.eval_size=8", "data.max_length=48"]
INSTRUCT = [*LLAMA, "task=instruct", "adapter=lora", "trainer.max_steps=40", "adapter.r=16",
            "optim.lr=1e-2", "task.max_new_tokens=10", "task.generate_eval_samples=8"]
LM = [*LLAMA, "task=lm", "adapter=full", "trainer.max_steps=6"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy-tasks")
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    cfgs = {name: compose_cfg([*TINY, *overrides, f"tracking.experiment={name}"], root)
            for name, overrides in (("qa", QA), ("instruct", INSTRUCT), ("lm", LM))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # two OpenMP threads on two busy, shared cores run slower
    for cfg in cfgs.values():
        train(cfg)
    torch.set_num_threads(threads)
    client = connect(cfgs["qa"].tracking.uri)
    runs = {}
    for name in cfgs:
        exp = client.get_experiment_by_name(name).experiment_id
        [runs[name]] = client.search_runs([exp], "tags.`tunelab.run_kind` = 'train'")
    exports = {"qa-merged": export(client, runs["qa"]),
               "qa-adapter": export(client, runs["qa"], merge=False),
               "instruct-merged": export(client, runs["instruct"]),
               "instruct-adapter": export(client, runs["instruct"], merge=False),
               "lm": export(client, runs["lm"])}
    yield {"root": root, "uri": cfgs["qa"].tracking.uri, "client": client, "cfgs": cfgs,
           "runs": runs, "exports": exports}
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def _trained(cfg, run, uri: str, dst: Path):
    """The run's network rebuilt from its weights artifact alone, and its prepared data."""
    cfg, raw, task_data, tokenizer, dm = prepared_data(cfg, batch_size=cfg.data.batch_size)
    weights = Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="weights", dst_path=str(dst), tracking_uri=uri))
    base = models.load_model(cfg.model, cfg.task, task_data.label_names, tokenizer, cfg.seed)
    return adapters.load_weights(base, weights).eval(), cfg, raw, task_data, tokenizer, dm


def _model(lab, name: str):
    return mlflow.pyfunc.load_model(lab["exports"][name].model_uri)


def test_qa_export_answers_what_validation_measured(lab, tmp_path):
    run = lab["runs"]["qa"]
    net, _, raw, task_data, _, dm = _trained(lab["cfgs"]["qa"], run, lab["uri"], tmp_path)
    metric = SquadSpans()
    bind_references({"squad": metric}, task_data, "validation")
    with torch.no_grad():
        for batch in dm.val_dataloader():
            out = net(**{k: v for k, v in batch.items()
                         if k not in ("example_id", "offset_mapping")})
            metric.update(out.start_logits, out.end_logits, batch["offset_mapping"],
                          batch["example_id"])
    direct = metric.predictions()
    val = raw.splits["validation"].to_pandas()[["question", "context"]]
    merged, adapter = _model(lab, "qa-merged"), _model(lab, "qa-adapter")
    got = merged.predict(val)
    assert list(got.columns) == ["answer", "score"] and len(got) == len(val)
    assert got["answer"].tolist() == [direct[i] for i in range(len(val))]
    assert got["answer"].str.len().gt(0).all() and got["score"].between(0, 1).all()
    assert adapter.predict(val)["answer"].tolist() == got["answer"].tolist()
    pd.testing.assert_series_equal(adapter.predict(val)["score"], got["score"], atol=1e-5)
    meta = merged.metadata
    assert meta.get_input_schema().input_names() == ["question", "context"]
    assert meta.get_output_schema().input_names() == ["answer", "score"]
    info = lab["client"].get_logged_model(lab["exports"]["qa-merged"].model_id)
    assert info.model_type == "question-answering" and info.source_run_id == run.info.run_id

    with pytest.raises(MlflowException, match="context"):
        merged.predict(val[["question"]])


def test_instruct_export_writes_what_validation_generated(lab, tmp_path):
    run = lab["runs"]["instruct"]
    net, cfg, raw, _, tokenizer, dm = _trained(lab["cfgs"]["instruct"], run, lab["uri"],
                                               tmp_path)
    head = GenerativeHead(cfg.task, tokenizer, "decoder", cfg.objective, None)
    direct = [answer for batch in dm.val_dataloader()
              for answer in head.generate(net, batch, len(batch["input_ids"]))]
    prompts = raw.splits["validation"].to_pandas()[["prompt"]]
    merged, adapter = _model(lab, "instruct-merged"), _model(lab, "instruct-adapter")
    got = merged.predict(prompts)
    assert list(got.columns) == ["response"]
    assert got["response"].tolist() == direct
    assert adapter.predict(prompts)["response"].tolist() == direct, "merged == unmerged"
    assert any(direct), "a few steps teach the tiny model to write something"
    params = merged.metadata.get_params_schema().params
    assert [(p.name, p.default) for p in params] == [("max_new_tokens", 10)]
    short = merged.predict(prompts, params={"max_new_tokens": 1})["response"]
    assert all(len(tokenizer.tokenize(s)) <= 1 for s in short)
    with pytest.raises(MlflowException, match="max_new_tokens must be at least 1"):
        merged.predict(prompts, params={"max_new_tokens": 0})


def test_lm_export_continues_a_text(lab):
    model = _model(lab, "lm")
    assert model.metadata.get_input_schema().input_names() == ["prompt"]
    out = model.predict(pd.DataFrame({"prompt": ["the food was", "a"]}),
                        params={"max_new_tokens": 3})
    assert list(out.columns) == ["response"] and len(out) == 2


def test_eval_of_qa_and_instruct_matches_validation_and_predictions(lab, capsys, tmp_path):
    uri, client = lab["uri"], lab["client"]
    for name, keys in (("qa", ("em", "f1")), ("instruct", ("ppl", "em", "loss")),
                       ("lm", ("ppl", "loss"))):
        run = lab["runs"][name]
        assert eval_main([run.info.run_id, "--split", "validation", "--tracking-uri", uri]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        for key in keys:
            assert printed[f"eval/{key}"] == pytest.approx(run.data.metrics[f"val/{key}"],
                                                           rel=1e-5, abs=1e-6), (name, key)
        evaluation = client.get_run(printed["eval_run"])
        assert evaluation.data.tags["tunelab.source_run"] == run.info.run_id

    rows = pd.DataFrame({"question": ["Where is Lumen based?", "Who founded Lumen?"],
                         "context": ["Lumen is based in Oslo.", "Lumen was founded by Ada Moreau."],
                         "answer": ["Oslo", "Ada Moreau"]})
    file = tmp_path / "qa.jsonl"
    rows.to_json(file, orient="records", lines=True)
    assert eval_main([lab["runs"]["qa"].info.run_id, "--data-file", str(file),
                      "--tracking-uri", uri]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    answers = _model(lab, "qa-merged").predict(rows[["question", "context"]])["answer"]
    em = sum(a.strip().lower() == g.lower() for a, g in zip(answers, rows["answer"])) / len(rows)
    assert printed["eval/em"] == pytest.approx(em)
    recorded = pd.read_json(mlflow.artifacts.download_artifacts(
        run_id=printed["eval_run"], artifact_path="predictions.jsonl", tracking_uri=uri),
        lines=True)
    assert recorded["answer"].tolist() == answers.tolist()


def test_predict_cli_for_qa_and_generation(lab, capsys, tmp_path):
    uri = lab["uri"]
    qa_uri, gen_uri = (lab["exports"][k].model_uri for k in ("qa-merged", "instruct-merged"))
    assert predict_main([qa_uri, "Where is Lumen based?", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "['question', 'context']" in err and "--input-file" in err
    src = tmp_path / "in.csv"
    pd.DataFrame({"question": ["Where is Lumen based?"],
                  "context": ["Lumen is based in Oslo."]}).to_csv(src, index=False)
    assert predict_main([qa_uri, "--input-file", str(src), "--tracking-uri", uri]) == 0
    [row] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert set(row) == {"question", "context", "answer", "score"} and row["answer"]

    assert predict_main([gen_uri, "What is 3 plus 4?", "--param", "max_new_tokens=2",
                         "--tracking-uri", uri]) == 0
    [row] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    want = _model(lab, "instruct-merged").predict(pd.DataFrame({"prompt": ["What is 3 plus 4?"]}),
                                                  params={"max_new_tokens": 2})
    assert row["response"] == want["response"][0]
    assert predict_main([gen_uri, "hi", "--param", "temperature=0", "--tracking-uri", uri]) == 2
    assert "takes no param(s) ['temperature']" in capsys.readouterr().err


def test_qa_model_is_served(lab):
    rows = pd.DataFrame({"question": ["Where is Lumen based?", "Who founded Lumen?"],
                         "context": ["Lumen is based in Oslo.", "Lumen was founded by Ada Moreau."]})
    model_uri = lab["exports"]["qa-merged"].model_uri
    want = mlflow.pyfunc.load_model(model_uri).predict(rows)
    got = _serve_and_post(model_uri, lab["uri"], {"dataframe_records": rows.to_dict("records")})
    assert [p["answer"] for p in got["predictions"]] == want["answer"].tolist()
    assert [p["score"] for p in got["predictions"]] == pytest.approx(want["score"].tolist(),
                                                                     abs=1e-6)
