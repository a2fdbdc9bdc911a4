"""`tunelab-train`: compose -> check -> data -> model + adapter -> Lightning fit/test -> MLflow.

Wiring only: the builders (tunelab.build) make the data, model and module and run the fit, the
resume plan (tracking.checkpoints.ResumePlan) owns the checkpoint folder, and TrackedRun the
MLflow run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from tunelab import adapters, budget, build, hardware, models
from tunelab.config import check_config
from tunelab.config.exits import config_errors_exit
from tunelab.config.printing import print_tree
from tunelab.sweeps import SWEEP_ENV, sweep_id_for
from tunelab.tracking import TrackedRun, is_rank_zero, run_weights, tracking_uri
from tunelab.tracking.checkpoints import ResumePlan
from tunelab.tracking.summary import print_run_summary

log = logging.getLogger("tunelab")
PROG = "tunelab-train"


def _conf_dir() -> str:
    packaged = Path(__file__).parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf")


def train(cfg: DictConfig, overrides: list[str] = (), sweep_id: str | None = None,
          output_dir: Path | None = None, run_kind: str = "train",
          source_run: str | None = None) -> float | None:
    """Run one logical run and return the metric sweepers optimise (val/<task.monitor>);
    `run_kind="reproduce"` re-runs `source_run` as a new run (tunelab-reproduce)."""
    cfg = check_config(cfg)
    hardware.check_machine(cfg.hardware)
    if adapters.needs_module_tree(cfg.adapter):
        adapters.check_fit(models.skeleton(cfg.model, cfg.task), cfg.adapter, cfg.model)
    if is_rank_zero():
        print_tree(cfg)
    inputs = build.build_data(cfg)
    init = run_weights(cfg.model.init_from, tracking_uri(cfg.tracking.uri, cfg.paths.mlruns_dir),
                       Path(cfg.paths.cache_dir)) if cfg.model.init_from else None
    run = TrackedRun(cfg, list(overrides), inputs.raw.digest, sweep_id, run_kind=run_kind,
                     source_run=source_run).open()
    if run.status == "skipped":
        log.info("config %s already has FINISHED run %s; skipping "
                 "(tracking.on_finished=rerun trains again)", run.config_hash, run.run_id)
        print_run_summary(run)
        return run.final_metric(f"val/{cfg.task.monitor}")
    with run, hardware.distributed_job():
        L.seed_everything(cfg.seed, workers=True)
        tokenizer = build.build_tokenizer(cfg)
        net = build.build_model(cfg, inputs.label_names, tokenizer, init)
        run.log_metrics(adapters.parameter_counts(net))
        run.log_params(hardware.profile_params(cfg.hardware, cfg.trainer, cfg.data.batch_size))
        run.log_dict({"labels": inputs.label_names}, "labels.json")
        for split, ds in inputs.raw.splits.items():
            run.log_input(ds, *inputs.raw.origins[split], inputs.raw.digest, split)
        datamodule = build.build_datamodule(cfg, inputs, tokenizer)
        module = build.build_module(cfg, net, inputs, tokenizer)
        plan = ResumePlan(run.checkpoint_dir, run.status == "resumed",
                          cfg.trainer.checkpoint_every_n_steps, cfg.seed)
        meter = budget.BudgetMeter(cfg.adapter.method, cfg.budget.tokens, cfg.budget.seconds,
                                   cfg.budget.flops)
        trainer = L.Trainer(**hardware.trainer_kwargs(cfg.hardware, cfg.trainer, cfg,
                                                      output_dir or run.checkpoint_dir, net),
                            logger=run.logger() or False, default_root_dir=output_dir,
                            callbacks=[*run.callbacks(), meter, *plan.callbacks],
                            plugins=[plan.io])
        result = build.fit(trainer, module, datamodule, plan.start(trainer))
        trained = build.trained_model(
            trainer, module, lambda: build.build_model(cfg, inputs.label_names, tokenizer, init))
        if trained is not None:
            weights = Path(output_dir or run.checkpoint_dir) / "weights"
            size_mb = adapters.save_weights(trained, weights, tokenizer)
            run.log_metrics({"params/adapter_mb": size_mb,
                             "time/tokenize_seconds": datamodule.prepare_seconds},
                            step=trainer.global_step)
            run.log_artifacts(weights, "weights")
    plan.finish(trainer)
    print_run_summary(run)
    return result


@hydra.main(config_path=_conf_dir(), config_name="train", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    sweep_id = None
    if hydra_cfg.mode == RunMode.MULTIRUN:     # a bad job fails alone; the sweep summary lists it
        sweep_id = os.environ.get(SWEEP_ENV) or sweep_id_for(hydra_cfg.sweep.dir)
    return train(cfg, list(hydra_cfg.overrides.task), sweep_id, Path(hydra_cfg.runtime.output_dir))


def main() -> None:
    """The `tunelab-train` console script. HYDRA_FULL_ERROR=1 lets errors out of Hydra (which
    would print them with a traceback and exit 1), so config errors exit 2 with one line; a user
    who set HYDRA_FULL_ERROR=1 still gets the traceback above it."""
    show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    with config_errors_exit(PROG, show_traceback):
        hydra_main()


if __name__ == "__main__":
    main()
