"""Which tunelab ran comes from tunelab's own installation, never from the working directory, and
`tunelab-reproduce` says what differs from it."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

from tests.conftest import train_runs
from tunelab import reproduce
from tunelab.train import train

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tunelab"


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_run_inside_a_foreign_repository_records_tunelabs_commit(tiny_cfg, client, tmp_path,
                                                                     monkeypatch, capsys):
    foreign = tmp_path / "their-project"
    foreign.mkdir()
    _git(foreign, "init", "-q")
    (foreign / "notes.txt").write_text("not tunelab\n")
    _git(foreign, "add", "notes.txt")
    _git(foreign, "-c", "user.name=x", "-c", "user.email=x@y", "commit", "-q", "-m", "theirs")
    monkeypatch.chdir(foreign)
    train(tiny_cfg("trainer.max_steps=4"))
    [run] = train_runs(client)
    tags = run.data.tags
    ours = _git(PACKAGE, "rev-parse", "HEAD")
    assert tags["tunelab.code.commit"] == ours != _git(foreign, "rev-parse", "HEAD")
    assert tags["mlflow.source.git.commit"] == ours
    assert tags["tunelab.code.version"] == version("tunelab")
    dirty = bool(_git(PACKAGE, "status", "--porcelain", "--untracked-files=no"))
    assert tags["tunelab.code.dirty"] == str(dirty).lower()

    client.set_tag(run.info.run_id, "tunelab.code.commit", "0" * 40)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    reproduce.main([run.info.run_id, "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert f"tunelab.code.commit was {'0' * 40} when the run was recorded, {ours} now" in err
    assert "tunelab.code.version" not in err, "only what differs is reported"
