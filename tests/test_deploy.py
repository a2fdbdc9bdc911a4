"""Evaluate and deploy on real tiny-bert runs: exports through MLflow's pyfunc and Model Registry,
a real `mlflow models serve` process, and `eval` runs checked against direct computations."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import TINY, compose_cfg
from tunelab import build
from tunelab.config import check_config
from tunelab.deploy.classifier import build_net
from tunelab.deploy.cli import eval_main, export_main, predict_main
from tunelab.deploy.export import export
from tunelab.deploy.runs import best_run, connect
from tunelab.train import train

SHORT = ["trainer.max_steps=20", "data.synthetic.train_size=480", "data.synthetic.eval_size=64"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One store with a finished LoRA run and a finished full run in experiment `tunelab`, a
    few-step prompt-tuning run in its own experiment (so --best never picks it), plus the LoRA run
    exported merged and unmerged and the full run exported."""
    root = tmp_path_factory.mktemp("deploy")
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    cfgs = {a: compose_cfg([*TINY, *SHORT, f"adapter={a}"], root) for a in ("lora", "full")}
    cfgs["prompt"] = compose_cfg([*TINY, *SHORT, "adapter=prompt", "trainer.max_steps=2",
                                  "tracking.experiment=unmergeable"], root)
    for cfg in cfgs.values():
        train(cfg)
    uri = cfgs["lora"].tracking.uri
    client = connect(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = {r.data.params["adapter.name"]: r
            for r in client.search_runs(experiments, "tags.`tunelab.run_kind` = 'train'")}
    exports = {"lora-merged": export(client, runs["lora"], merge=True),
               "lora-adapter": export(client, runs["lora"], merge=False),
               "full": export(client, runs["full"])}
    yield {"root": root, "uri": uri, "client": client, "cfgs": cfgs, "runs": runs,
           "exports": exports}
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def _validation(cfg) -> pd.DataFrame:
    return build.build_data(check_config(cfg)).raw.splits["validation"].to_pandas()


def _trained_probs(cfg, run_id: str, uri: str, dst: Path) -> np.ndarray:
    """Class probabilities of the validation split from the model rebuilt from its artifact alone,
    batched and padded as training validated it."""
    cfg = check_config(cfg)
    weights = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="weights",
                                                       dst_path=str(dst), tracking_uri=uri))
    inputs = build.build_data(cfg)
    tokenizer = build.build_tokenizer(cfg)
    net = build_net(cfg, inputs.label_names, weights, tokenizer)
    dm = build.build_datamodule(cfg, inputs, tokenizer)
    dm.setup()
    with torch.no_grad():
        return torch.cat([net(**b).logits.softmax(-1) for b in dm.val_dataloader()]).numpy()


def _macro_f1(gold: list[str], pred: list[str]) -> float:
    scores = []
    for label in set(gold) | set(pred):
        tp = sum(g == p == label for g, p in zip(gold, pred))
        fp = sum(p == label != g for g, p in zip(gold, pred))
        fn = sum(g == label != p for g, p in zip(gold, pred))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


@pytest.mark.parametrize("name,adapter", [("lora-merged", "lora"), ("lora-adapter", "lora"),
                                          ("full", "full")])
def test_export_predicts_what_the_trained_model_did(lab, name, adapter, tmp_path):
    run, exported = lab["runs"][adapter], lab["exports"][name]
    model = mlflow.pyfunc.load_model(exported.model_uri)
    val = _validation(lab["cfgs"][adapter])
    out = model.predict(val[["text"]])
    assert list(out.columns) == ["label", "score"] and len(out) == len(val)
    acc = float((out["label"] == val["label"]).mean())
    assert acc == pytest.approx(run.data.metrics["val/acc"], abs=1e-6)
    probs = _trained_probs(lab["cfgs"][adapter], run.info.run_id, lab["uri"], tmp_path)
    labels = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/labels.json"))
    assert out["label"].tolist() == [labels["labels"][i] for i in probs.argmax(-1)]
    np.testing.assert_allclose(out["score"].to_numpy(), probs.max(-1), atol=1e-5)

    info = lab["client"].get_logged_model(exported.model_id)
    assert info.source_run_id == run.info.run_id and info.status == "READY"
    assert info.tags["tunelab.config_hash"] == run.data.tags["tunelab.config_hash"]
    assert info.tags["tunelab.merged"] == str(name == "lora-merged").lower()
    meta = model.metadata
    assert meta.get_input_schema().input_names() == ["text"]
    assert meta.get_output_schema().input_names() == ["label", "score"]
    assert meta.saved_input_example_info is not None
    files = {Path(a.path).name for a in lab["client"].list_logged_model_artifacts(
        exported.model_id, "artifacts/weights")}
    assert ("model.safetensors" in files) == (name != "lora-adapter"), \
        "merged and full exports carry a plain transformers folder, --no-merge the adapter only"


def test_merged_and_unmerged_exports_agree(lab):
    texts = pd.DataFrame({"text": _validation(lab["cfgs"]["lora"])["text"]})
    merged = mlflow.pyfunc.load_model(lab["exports"]["lora-merged"].model_uri).predict(texts)
    adapter = mlflow.pyfunc.load_model(lab["exports"]["lora-adapter"].model_uri).predict(texts)
    assert merged["label"].tolist() == adapter["label"].tolist()
    np.testing.assert_allclose(merged["score"], adapter["score"], atol=1e-5)


def test_best_run_is_exported_registered_and_served(lab, capsys):
    client, uri = lab["client"], lab["uri"]
    exp = client.get_experiment_by_name("tunelab").experiment_id
    [expected] = client.search_runs([exp], "tags.`tunelab.run_kind` = 'train' and "
                                    "attributes.status = 'FINISHED'",
                                    order_by=["metrics.`val/loss` ASC"], max_results=1)
    assert export_main(["--experiment", "tunelab", "--best", "loss", "--register", "tiny-clf",
                        "--alias", "champion", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "models:/tiny-clf@champion"
    version = client.get_model_version_by_alias("tiny-clf", "champion")
    assert version.tags["tunelab.source_run"] == expected.info.run_id
    assert version.tags["tunelab.config_hash"] == expected.data.tags["tunelab.config_hash"]
    top_acc = max(lab["runs"][a].data.metrics["val/acc"] for a in ("lora", "full"))
    assert best_run(client, "tunelab", "val/acc").data.metrics["val/acc"] == top_acc

    val = _validation(lab["cfgs"][expected.data.params["adapter.name"]]).head(8)
    want = mlflow.pyfunc.load_model("models:/tiny-clf@champion").predict(val[["text"]])
    got = _serve_and_post("models:/tiny-clf@champion", uri,
                          {"dataframe_records": val[["text"]].to_dict("records")})
    assert [p["label"] for p in got["predictions"]] == want["label"].tolist()
    np.testing.assert_allclose([p["score"] for p in got["predictions"]], want["score"], atol=1e-6)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_and_post(model_uri: str, tracking_uri: str, payload: dict) -> dict:
    """Start `mlflow models serve` on 127.0.0.1, POST to /invocations once it is up, stop it."""
    port = _free_port()
    bin_dir = Path(sys.executable).parent      # mlflow execs `uvicorn` from PATH: this env's
    proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri,
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
                                 "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "mlflow models serve did not come up"
                time.sleep(1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stderr.close()


def test_eval_on_a_new_file_records_an_eval_run_matching_a_direct_computation(lab, capsys):
    run = lab["runs"]["full"]
    before = lab["client"].get_run(run.info.run_id)
    rows = _validation(lab["cfgs"]["full"]).sample(frac=1.0, random_state=1).head(40)
    file = lab["root"] / "new.csv"
    rows.to_csv(file, index=False)
    assert eval_main([run.info.run_id, "--data-file", str(file), "--tracking-uri",
                      lab["uri"]]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    evaluation = lab["client"].get_run(printed["eval_run"])
    assert evaluation.info.status == "FINISHED"
    assert evaluation.info.experiment_id == run.info.experiment_id
    assert evaluation.data.tags["tunelab.run_kind"] == "eval"
    assert evaluation.data.tags["tunelab.source_run"] == run.info.run_id
    assert evaluation.data.params["eval.data_file"] == str(file.resolve())
    assert evaluation.data.params["eval.samples"] == "40"

    pred = mlflow.pyfunc.load_model(lab["exports"]["full"].model_uri).predict(rows[["text"]])
    gold, labels = rows["label"].tolist(), pred["label"].tolist()
    metrics = evaluation.data.metrics
    assert metrics["eval/acc"] == pytest.approx(np.mean([g == p for g, p in zip(gold, labels)]),
                                                abs=1e-6)
    assert metrics["eval/f1"] == pytest.approx(_macro_f1(gold, labels), abs=1e-6)
    assert 0 <= metrics["eval/acc"] <= 1 and 0 <= metrics["eval/f1"] <= 1
    recorded = pd.read_json(mlflow.artifacts.download_artifacts(
        run_id=printed["eval_run"], artifact_path="predictions.jsonl"), lines=True)
    assert recorded["label"].tolist() == labels and recorded["gold"].tolist() == gold
    after = lab["client"].get_run(run.info.run_id)
    assert after.data.metrics == before.data.metrics and after.data.tags == before.data.tags
    assert after.info.end_time == before.info.end_time, "the training run is never rewritten"

    assert eval_main([run.info.run_id, "--split", "validation", "--tracking-uri",
                      lab["uri"]]) == 0
    on_val = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert on_val["eval/acc"] == pytest.approx(run.data.metrics["val/acc"], abs=1e-6)
    assert on_val["eval/loss"] == pytest.approx(run.data.metrics["val/loss"], abs=1e-5)


def test_eval_warns_when_the_data_changed_not_when_the_machine_did(lab, tmp_path, monkeypatch,
                                                                   caplog, capsys):
    """`--split` re-reads the run's own files: a changed file is said, while the same rows read on
    another machine (here: another CPU model, which changes the run's config hash) are not."""
    rows = _validation(lab["cfgs"]["full"])
    train_file, val_file = tmp_path / "train.csv", tmp_path / "val.csv"
    rows.to_csv(train_file, index=False)
    rows.head(32).to_csv(val_file, index=False)
    cfg = compose_cfg([*TINY, "trainer.max_steps=2", f"data.train_file={train_file}",
                       f"data.validation_file={val_file}"], tmp_path)
    train(cfg)
    uri = cfg.tracking.uri
    run = connect(uri).search_runs(
        [e.experiment_id for e in connect(uri).search_experiments()],
        "tags.`tunelab.run_kind` = 'train'")[0]
    warning = "the data read now differs"

    monkeypatch.setattr("tunelab.tracking.params.device_model", lambda accelerator: "other CPU")
    assert eval_main([run.info.run_id, "--split", "validation", "--tracking-uri", uri]) == 0
    assert warning not in caplog.text

    rows.head(32).assign(text=lambda df: df.text + " changed").to_csv(val_file, index=False)
    assert eval_main([run.info.run_id, "--split", "validation", "--tracking-uri", uri]) == 0
    assert warning in caplog.text
    capsys.readouterr()


def test_predict_reads_and_writes_files(lab, tmp_path, capsys):
    uri, model_uri = lab["uri"], lab["exports"]["full"].model_uri
    rows = _validation(lab["cfgs"]["full"]).head(5)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.csv"
    rows.to_json(src, orient="records", lines=True)
    assert predict_main([model_uri, "--input-file", str(src), "--output-file", str(out),
                         "--tracking-uri", uri]) == 0
    written = pd.read_csv(out)
    want = mlflow.pyfunc.load_model(model_uri).predict(rows[["text"]])
    assert written["text"].tolist() == rows["text"].tolist()
    assert written["label_input"].tolist() == rows["label"].tolist()
    assert written["label"].tolist() == want["label"].tolist()
    by_run = f"runs:/{lab['runs']['full'].info.run_id}/tiny-bert-full-sentiment-cpu-s0"
    assert predict_main([by_run, *rows["text"][:2], "--tracking-uri", uri]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["label"] for x in lines] == want["label"].tolist()[:2]


def test_bad_input_is_one_clear_line_and_exit_code_2(lab, capsys, tmp_path):
    client, uri = lab["client"], lab["uri"]
    lora, prompt = lab["runs"]["lora"].info.run_id, lab["runs"]["prompt"].info.run_id

    def fails(main, *args: str) -> str:
        assert main([*args, "--tracking-uri", uri]) == 2
        return capsys.readouterr().err

    assert "not found" in fails(export_main, "0123456789abcdef0123456789abcdef")
    assert "has metric 'val/nope'" in fails(export_main, "--experiment", "tunelab",
                                            "--best", "nope")
    failed = client.create_run(client.get_experiment_by_name("tunelab").experiment_id,
                               tags={"tunelab.run_kind": "train"})
    client.set_terminated(failed.info.run_id, "FAILED")
    assert "is FAILED, not FINISHED" in fails(eval_main, failed.info.run_id)
    evaluation = client.create_run(failed.info.experiment_id, tags={
        "tunelab.run_kind": "eval", "tunelab.source_run": lora})
    client.set_terminated(evaluation.info.run_id, "FINISHED")
    err = fails(export_main, evaluation.info.run_id)
    assert "of kind 'eval', not a training run" in err and lora in err
    mlm = client.create_run(failed.info.experiment_id, tags={"tunelab.run_kind": "train"})
    recorded = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{lora}/config/config.yaml"))
    recorded["task"].update(name="lm", kind="lm", head="lm")     # masked LM: no pipeline
    client.log_text(mlm.info.run_id, yaml.safe_dump(recorded), "config/config.yaml")
    client.log_text(mlm.info.run_id, json.dumps({"labels": []}), "labels.json")
    client.log_text(mlm.info.run_id, "{}", "weights/config.json")
    client.set_terminated(mlm.info.run_id, "FINISHED")
    assert "writes no text (masked LM)" in fails(export_main, mlm.info.run_id)
    err = fails(export_main, prompt)
    assert "cannot be merged" in err and "--no-merge" in err
    assert export_main([prompt, "--no-merge", "--tracking-uri", uri]) == 0, "adapter export works"
    capsys.readouterr()

    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text(json.dumps({"text": "fine"}) + "\n")
    assert "lacks the column(s) ['label']" in fails(eval_main, lora, "--data-file",
                                                    str(unlabelled))
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sentence\nhello\n")
    assert "lacks the column(s) ['text']" in fails(
        predict_main, lab["exports"]["full"].model_uri, "--input-file", str(wrong))

    assert "could not register" in fails(export_main, lora, "--register", "half",
                                         "--alias", "not an alias!")
    assert client.search_registered_models("name = 'half'") == [], "nothing half-registered"
