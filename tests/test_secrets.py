"""Secrets and trust: planted tokens never reach the MLflow store, remote code stays off, weights
of our own runs load from safetensors only, and every documented server binds to localhost."""

from __future__ import annotations

import os
import re
import secrets
import string
import sys
import threading

import pytest
import torch
import yaml

from tests.conftest import CONF, ROOT, TINY, compose_cfg, run_cli, train_runs
from tunelab import data, models
from tunelab.config import check_config
from tunelab.deploy.evaluate import evaluate
from tunelab.deploy.runs import finished_train_run
from tunelab.tracking.masking import secret_env_values
from tunelab.tracking.store import client_for
from tunelab.train import train

MODEL_PRESETS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def random_text(length: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def store_bytes(mlruns) -> bytes:
    """Everything the store holds: the SQLite database (with its journal) and every artifact."""
    return b"".join(p.read_bytes() for p in sorted(mlruns.rglob("*")) if p.is_file())


def test_an_exception_ends_failed_and_no_planted_secret_reaches_the_store(tmp_path):
    hub_token = f"hf_{random_text(34)}"             # the Hub's token format
    api_key = random_text(24)                       # no known format: masked by its env name
    path_token = f"hf_{random_text(30)}"            # a token in a data folder's name
    env = {"HF_TOKEN": hub_token, "TUNELAB_API_KEY": api_key}
    data_dir = tmp_path / "data" / path_token
    data_dir.mkdir(parents=True)
    rows = [f"{'a fine lovely film' if i % 2 else 'a dull awful film'} {i},{i % 2}"
            for i in range(96)]
    (data_dir / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")

    ok = run_cli(["tunelab-train", *TINY, "trainer.max_steps=4", "adapter=lora",
                  f"data.train_file={data_dir / 'train.csv'}", f"tracking.run_name=exp-{api_key}"],
                 cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    failing = run_cli(["tunelab-train", *TINY, "adapter=full", "trainer.max_steps=4",
                       f"model.pretrained=/models/{path_token}/weights"], cwd=tmp_path, env=env)
    assert failing.returncode != 0

    client = client_for(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = {r.data.tags["mlflow.runName"]: r for r in train_runs(client)}
    assert runs["exp-***"].info.status == "FINISHED"
    assert runs["exp-***"].data.params["data.train_file"].endswith("/***/train.csv")
    [failed] = [r for name, r in runs.items() if name != "exp-***"]
    assert failed.info.status == "FAILED"
    assert "/models/***/weights" in failed.data.tags["tunelab.error"], \
        "the error is recorded, with the token masked"
    assert "error.txt" in {a.path for a in client.list_artifacts(failed.info.run_id)}

    recorded = store_bytes(tmp_path / "mlruns")
    assert b"***" in recorded and b"train.csv" in recorded
    for planted in (hub_token, api_key, path_token):
        assert planted.encode() not in recorded, f"{planted[:6]}... reached the MLflow store"


def test_an_eval_run_masks_its_data_file_in_params_name_and_dataset_input(tmp_path, monkeypatch):
    """tunelab-eval writes through the same masking as training: a token in the evaluated file's
    folder (Hub format) or name (an env secret's value) reaches neither the eval run's params,
    its name, its dataset input, nor any byte of the store."""
    api_key, path_token = random_text(24), f"hf_{random_text(30)}"
    monkeypatch.setenv("TUNELAB_API_KEY", api_key)
    cfg = check_config(compose_cfg([*TINY, "trainer.max_steps=4", "adapter=full"], tmp_path))
    train(cfg)
    folder = tmp_path / "data" / path_token
    folder.mkdir(parents=True)
    file = folder / f"held-out-{api_key}.csv"
    raw = data.load_splits(cfg.data, cfg.task, tmp_path / "cache")
    raw.splits["validation"].to_pandas().head(16).to_csv(file, index=False)

    client = client_for(cfg.tracking.uri)
    [trained] = train_runs(client)
    evaluation = evaluate(client, finished_train_run(client, trained.info.run_id),
                          data_file=str(file))
    assert evaluation.data.tags["tunelab.run_kind"] == "eval"
    assert evaluation.data.params["eval.data_file"] == str(tmp_path / "data" / "***" /
                                                            "held-out-***.csv")
    assert evaluation.info.run_name.endswith("-held-out-***.csv")
    [entry] = evaluation.inputs.dataset_inputs
    assert "held-out-***.csv" in entry.dataset.source, entry.dataset.source
    recorded = store_bytes(tmp_path / "mlruns")
    for planted in (api_key, path_token):
        assert planted.encode() not in recorded, f"{planted[:6]}... reached the MLflow store"


def test_urls_lose_their_passwords_and_secret_query_values():
    from tunelab.tracking.masking import mask_text
    assert mask_text("postgresql://tunelab:s3cretpass@db:5432/mlflow") == \
        "postgresql://tunelab:***@db:5432/mlflow"
    assert mask_text("https://host/rows.csv?rev=2&token=abc123&x=1") == \
        "https://host/rows.csv?rev=2&token=***&x=1"
    assert mask_text("https://host/rows.csv?page=2") == "https://host/rows.csv?page=2"


@pytest.mark.parametrize("preset", MODEL_PRESETS)
def test_trust_remote_code_is_off_unless_the_preset_turns_it_on(preset, tmp_path):
    written = yaml.safe_load((CONF / "model" / f"{preset}.yaml").read_text())
    cfg = check_config(compose_cfg([f"model={preset}", "adapter=full"], tmp_path))
    assert cfg.model.trust_remote_code is (written.get("trust_remote_code") is True)


def test_weights_of_an_earlier_run_load_from_safetensors_only(tmp_path):
    cfg = check_config(compose_cfg(TINY, tmp_path))
    tokenizer = models.load_tokenizer(cfg.model)
    net = models.load_model(cfg.model, cfg.task, ["neg", "pos"], tokenizer)
    pickled, safe = tmp_path / "pickled", tmp_path / "safe"
    net.save_pretrained(safe)
    # a pickled checkpoint as transformers 4 wrote it (5 writes safetensors only)
    net.config.save_pretrained(pickled)
    torch.save(net.state_dict(), pickled / "pytorch_model.bin")
    assert not list(pickled.glob("*.safetensors")) and list(safe.glob("*.safetensors"))
    with pytest.raises(OSError, match="safetensors"):
        models.load_model(cfg.model, cfg.task, ["neg", "pos"], tokenizer, weights=str(pickled))
    again = models.load_model(cfg.model, cfg.task, ["neg", "pos"], tokenizer, weights=str(safe))
    assert all(a.equal(b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def test_every_documented_server_command_binds_localhost():
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    servers = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()
               if re.search(r"\bmlflow (ui|server|models serve)\b|^\s*tunelab-serve\b", line)]
    assert servers, "the README documents how to browse runs"
    for line in servers:
        assert re.search(r"(--host|-h)[ =]127\.0\.0\.1\b", line), line


def test_a_secret_word_inside_a_name_is_not_masked_but_a_secret_name_is():
    from tunelab.tracking.masking import MASK, mask_text, masked
    tree = {"model": {"config": {"num_key_value_heads": 2}, "hub_token": "abcd1234efgh"},
            "task": {"max_new_tokens": 32}}
    out = masked(tree)
    assert out["model"]["config"]["num_key_value_heads"] == 2, "tiny-llama's config is rebuildable"
    assert out["task"]["max_new_tokens"] == 32
    assert out["model"]["hub_token"] == MASK
    assert mask_text("model.config.num_key_value_heads=2 hub.token=abcd1234efgh") == \
        f"model.config.num_key_value_heads=2 hub.token={MASK}"


def test_secret_values_are_read_while_another_thread_changes_the_environment(monkeypatch):
    """MLflow's telemetry thread deletes its own variable while a run starts; reading the
    environment for secrets must neither fail nor miss a secret that stays."""
    kept = random_text(16)
    monkeypatch.setenv("TUNELAB_TEST_API_KEY", kept)
    previous, stop = sys.getswitchinterval(), threading.Event()

    def churn() -> None:
        while not stop.is_set():
            os.environ["TUNELAB_CHURN_TOKEN"] = random_text(12)
            del os.environ["TUNELAB_CHURN_TOKEN"]

    sys.setswitchinterval(1e-6)     # switch threads often, as a busy machine does
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        found = [kept in secret_env_values() for _ in range(5000)]
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(previous)
    assert all(found)
