"""Studies as users launch them (`-m hydra/sweeper=study adapter=full,lora`): the runs and tags a
2-arm study records, a killed study resumed without retraining a finished trial, and bad input
refused before any job runs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mlflow import MlflowClient

from tests.conftest import CONF, TINY, kill_once_a_run_finishes, run_cli, train_runs
from tunelab.config import ConfigError
from tunelab.sweeps.study import Study, make_arm

STEPS = 4
# TINY without its fixed optim.lr: a fixed key is not searched
FAST = [*(a for a in TINY if not a.startswith("optim.lr=")), f"trainer.max_steps={STEPS}",
        "data.synthetic.train_size=64", "data.synthetic.eval_size=32", "data.batch_size=16",
        "trainer.checkpoint_every_n_steps=2"]
STUDY = ["tunelab-train", "-m", "hydra/sweeper=study", "adapter=full,lora"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]


def store(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def by_phase(runs, arm: str, phase: str) -> list:
    return [r for r in runs if r.data.tags["tunelab.arm"] == arm and
            r.data.tags["tunelab.phase"] == phase]


def test_two_arm_study_tunes_each_arm_then_confirms_its_best_on_fresh_seeds(tmp_path):
    """Two trials at a time on the joblib launcher."""
    proc = run_cli([*STUDY, *JOBLIB, "hydra.sweeper.trials_per_arm=3", "hydra.sweeper.seeds=2",
                    *FAST], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = store(tmp_path)
    [parent] = train_runs(client, kind="study")
    study_id = parent.data.tags["tunelab.study_id"]
    runs = train_runs(client)
    assert len(runs) == 2 * 3 + 2 * 2
    assert {r.data.tags["tunelab.study_id"] for r in runs} == {study_id}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    for adapter, low, high in (("full", 2e-5, 1e-3), ("lora", 4e-4, 2e-2)):
        arm = f"adapter={adapter}"
        search, confirm = by_phase(runs, arm, "search"), by_phase(runs, arm, "confirm")
        assert len(search) == 3 and len(confirm) == 2
        assert {r.data.params["adapter.name"] for r in search + confirm} == {adapter}
        assert {r.data.params["seed"] for r in search} == {"0"}
        assert sorted(r.data.params["seed"] for r in confirm) == ["1", "2"]   # fresh seeds
        lrs = {float(r.data.params["optim.lr"]) for r in search}
        assert len(lrs) == 3 and all(low <= lr <= high for lr in lrs)
        heads = {float(r.data.params["optim.head_lr"]) for r in search}     # the head's own rate
        assert len(heads) == 3 and all(3e-3 <= lr <= 3e-1 for lr in heads)
        assert {r.data.params["optim.head_lr"] for r in confirm} == \
            {parent.data.params[f"tuned/adapter:{adapter}/optim.head_lr"]}
        best = max(search, key=lambda r: r.data.metrics["val/acc"])
        tuned = parent.data.params[f"tuned/adapter:{adapter}/optim.lr"]
        assert {r.data.params["optim.lr"] for r in confirm} == {tuned}
        assert best.data.metrics["val/acc"] == \
            parent.data.metrics[f"search/adapter:{adapter}/val_acc_best"]
        assert all("test/acc" in r.data.metrics for r in confirm)
        assert {r.data.metrics["budget/steps_used"] for r in runs} == {STEPS}
    assert {int(r.data.params["adapter.r"]) for r in by_phase(runs, "adapter=lora", "search")} \
        <= {4, 8, 16}
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["tunelab.study.budget_kind"] == "data"
    assert parent.data.tags["tunelab.study.arms"] == '["adapter=full", "adapter=lora"]'
    assert parent.data.tags["tunelab.study.storage"] == \
        f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"        # the default, beside the store


def test_killed_study_resumes_without_retraining_a_finished_trial(tmp_path):
    """SIGKILL the study once a run has finished, then run the same command again."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"        # a given Optuna database
    args = [*STUDY, "hydra.sweeper.trials_per_arm=2", "hydra.sweeper.seeds=1",
            f"hydra.sweeper.storage={storage}", *FAST]
    kill_once_a_run_finishes(args, tmp_path, tmp_path / "first.log")
    client = store(tmp_path)
    before = {r.info.run_id: r for r in train_runs(client)}
    finished = {i for i, r in before.items() if r.info.status == "FINISHED"}
    assert 1 <= len(finished) < 6, (tmp_path / "first.log").read_text()[-3000:]

    rerun = run_cli(args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    runs = train_runs(client)
    assert len(runs) == 2 * 2 + 2 * 1
    assert len({r.data.tags["tunelab.config_hash"] for r in runs}) == len(runs)
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        if run.info.run_id in finished:     # never trained again
            assert run.info.end_time == before[run.info.run_id].info.end_time
    assert not (tmp_path / "mlruns" / "optuna.db").exists()
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(done) == 2, summary.study_name
    [parent] = train_runs(client, kind="study")
    assert parent.info.status == "FINISHED"


@pytest.fixture
def study_for(tmp_path):
    """A Study over the real composed config, whose launcher must never be reached."""
    launched: list = []

    def make(*hydra_overrides: str) -> Study:
        base = [*FAST, f"paths.mlruns_dir={tmp_path / 'mlruns'}", "hydra/sweeper=study",
                *hydra_overrides]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            config = compose("train", overrides=base, return_hydra_config=True)

        def load(overrides: list[str]):
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                return compose("train", overrides=[*base, *overrides], return_hydra_config=True)
        return Study(instantiate(config.hydra.sweeper).settings, config, load, launched.append)
    yield make
    assert launched == []
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


@pytest.mark.parametrize("arguments, message", [
    (["adapter=lora"], r"hydra/sweeper=study=\{\}: at least two arms"),
    (["adapter=full,lora", "optim.lrr=interval(1e-4, 1e-2)"],
     r"search\.optim\.lrr='interval\(1e-4, 1e-2\)': names no config key of arm adapter=full"),
    (["adapter=full,lora", "budget.tokens=-1"], r"budget\.tokens=-1: null \(no limit\) or > 0"),
    (["adapter=full", "trainer.max_steps=3,4"], r"budget=.*one budget for every arm"),
])
def test_a_bad_study_is_refused_before_any_job_runs(study_for, arguments, message):
    with pytest.raises(ConfigError, match=message):
        study_for().run(arguments)


def test_each_arm_searches_its_own_space_minus_its_axis_and_fixed_keys(study_for):
    study = study_for()

    def space(overrides: list[str], fixed: list[str] = ()) -> dict:
        return make_arm(study.load, overrides, list(fixed), {}, study.settings).space

    full, lora = space(["adapter=full"]), space(["adapter=lora"])
    assert sorted(full) == ["optim.head_lr", "optim.lr"]
    assert (full["optim.lr"].low, full["optim.lr"].high, full["optim.lr"].log) == (2e-5, 1e-3, True)
    head = full["optim.head_lr"]
    assert (head.low, head.high, head.log) == (3e-3, 3e-1, True)
    assert sorted(lora) == ["adapter.r", "optim.head_lr", "optim.lr"]
    assert lora["adapter.r"].choices == (4, 8, 16)
    assert sorted(space(["adapter=lora", "adapter.r=4"])) == ["optim.head_lr", "optim.lr"]   # axis
    assert sorted(space(["adapter=lora"], ["optim.lr=1e-3", "optim.head_lr=0.1"])) == \
        ["adapter.r"]                                                        # fixed keys


def test_the_head_rate_is_searched_only_where_a_fresh_head_trains_beside_the_body(study_for):
    """adapter=head trains the head alone at optim.lr; a decoder writing its answer has no fresh
    head; a decoder with a classifier head has one. Asking for the head rate where it is no
    knob is refused before any job runs."""
    study = study_for()

    def space(overrides: list[str], searched: dict | None = None) -> list[str]:
        return sorted(make_arm(study.load, overrides, [], searched or {}, study.settings).space)

    assert space(["adapter=head"]) == ["optim.lr"]
    writer = ["model=tiny-llama", "task=intent", "task.head=generate", "adapter=lora"]
    assert space(writer) == ["adapter.r", "optim.lr"]
    assert space(["model=tiny-llama", "task=intent", "adapter=lora"]) == \
        ["adapter.r", "optim.head_lr", "optim.lr"]                  # its fresh score head
    with pytest.raises(ConfigError, match=r"search\.optim\.head_lr='interval\(0\.01, 0\.1\)': "
                                          r"not searched in arm .*trains no fresh task head"):
        space(writer, {"optim.head_lr": "interval(0.01, 0.1)"})


def test_the_command_line_replaces_a_presets_arms(study_for):
    """experiment=fair-peft-vs-full adapter=lora: the preset's adapter list gives way, one arm."""
    with pytest.raises(ConfigError, match=r"hydra/sweeper=study=\{\}: at least two arms"):
        study_for("experiment=fair-peft-vs-full").run(["adapter=lora"])


@pytest.mark.parametrize("key", ["trials_per_arm", "seeds"])
def test_zero_trials_or_seeds_are_refused(study_for, key):
    with pytest.raises(ConfigError, match=rf"hydra\.sweeper\.{key}=0: an integer >= 1"):
        study_for(f"hydra.sweeper.{key}=0")


def test_a_one_arm_study_exits_non_zero_from_the_shell_with_one_message(tmp_path):
    proc = run_cli(["tunelab-train", "-m", "hydra/sweeper=study", "adapter=lora", *FAST],
                   cwd=tmp_path, env={"HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "tunelab-train: error: hydra/sweeper=study={}: at least two arms" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert train_runs(store(tmp_path)) == []


def test_presets_and_the_ray_launcher_compose_into_a_study():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        ray = compose("train", overrides=["hydra/sweeper=study", "+launcher=ray"],
                      return_hydra_config=True)
        peft = compose("train", overrides=["experiment=fair-peft-vs-full"],
                       return_hydra_config=True)
        decoder = compose("train", overrides=["experiment=fair-encoder-vs-decoder"],
                          return_hydra_config=True)
    sweeper, launcher = instantiate(ray.hydra.sweeper), instantiate(ray.hydra.launcher)
    assert type(sweeper).__name__ == "StudySweeper" and type(launcher).__name__ == "RayLauncher"
    assert sweeper.settings.study and sweeper.settings.sampler.keywords["seed"] == 0
    assert dict(peft.hydra.sweeper.params) == {"adapter": "full,lora,prefix"}
    assert dict(decoder.hydra.sweeper.params) == {
        "+experiment/arms": "encoder-classifier,decoder-lora"}
    for preset in (peft, decoder):
        assert type(instantiate(preset.hydra.sweeper)).__name__ == "StudySweeper"
