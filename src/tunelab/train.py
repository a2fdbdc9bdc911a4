"""`tunelab-train`: compose -> check -> data -> model + adapter -> Lightning fit/test -> MLflow.

Wiring only: each step lives in the package named after it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from tunelab import adapters, budget, data, hardware, models
from tunelab.config import check_config
from tunelab.config.exits import config_errors_exit
from tunelab.config.printing import print_tree
from tunelab.sweeps import SWEEP_ENV, sweep_id_for
from tunelab.tracking import TrackedRun, is_rank_zero, run_weights, tracking_uri
from tunelab.tracking.checkpoints import resume_point, resume_points
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
    cache_dir = Path(cfg.paths.cache_dir)
    raw = data.load_splits(cfg.data, cfg.task, cache_dir)
    task_data = data.task_data_for(raw, cfg.data, cfg.task, cfg.model.family)
    init = run_weights(cfg.model.init_from, tracking_uri(cfg.tracking.uri, cfg.paths.mlruns_dir),
                       cache_dir) if cfg.model.init_from else None
    run = TrackedRun(cfg, list(overrides), raw.digest, sweep_id, run_kind=run_kind,
                     source_run=source_run).open()
    monitor = f"val/{cfg.task.monitor}"
    if run.status == "skipped":
        log.info("config %s already has FINISHED run %s; skipping "
                 "(tracking.on_finished=rerun trains again)", run.config_hash, run.run_id)
        print_run_summary(run)
        return run.final_metric(monitor)
    with run, hardware.distributed_job():
        L.seed_everything(cfg.seed, workers=True)
        tokenizer = models.load_tokenizer(
            cfg.model, padding_side=adapters.padding_side(cfg.adapter, cfg.model, cfg.task))
        net = _build_net(cfg, task_data.label_names, tokenizer, init)
        counts = adapters.parameter_counts(net)
        run.log_metrics(counts)
        run.log_params(hardware.profile_params(cfg.hardware, cfg.trainer, cfg.data.batch_size))
        run.log_dict({"labels": task_data.label_names}, "labels.json")
        for split, ds in raw.splits.items():
            run.log_input(ds, *raw.origins[split], raw.digest, split)

        datamodule = data.TuneDataModule(
            raw, task_data, tokenizer, max_length=cfg.data.max_length,
            batch_size=hardware.per_device_batch(cfg.data.batch_size, cfg.hardware,
                                                 cfg.trainer.accumulate_grad_batches),
            num_workers=cfg.data.num_workers, cache_dir=cache_dir, padding=cfg.data.padding,
            group_by_length=cfg.data.group_by_length, seed=cfg.seed)
        module = models.TuneModule(net, cfg.task, cfg.optim, cfg.objective,
                                   num_labels=len(task_data.label_names), tokenizer=tokenizer,
                                   family=cfg.model.family, label_names=task_data.label_names)
        checkpoints, checkpoint_io = resume_points(
            run.checkpoint_dir, cfg.trainer.checkpoint_every_n_steps, cfg.seed)
        meter = budget.BudgetMeter(cfg.adapter.method, cfg.budget.tokens, cfg.budget.seconds,
                                   cfg.budget.flops)
        trainer = L.Trainer(**hardware.trainer_kwargs(cfg.hardware, cfg.trainer, cfg,
                                                      output_dir or run.checkpoint_dir, net),
                            logger=run.logger() or False, default_root_dir=output_dir,
                            callbacks=[*run.callbacks(), meter, *checkpoints],
                            plugins=[checkpoint_io])
        resume = resume_point(trainer, run.checkpoint_dir, run.status == "resumed")
        trainer.fit(module, datamodule, ckpt_path=resume, weights_only=True)
        if module.last_val_step != trainer.global_step:
            trainer.validate(module, datamodule, verbose=False)
        result = trainer.callback_metrics.get(monitor)
        if datamodule.has_test:
            trainer.test(module, datamodule, verbose=False)
        whole = hardware.full_state_dict(trainer, "model")      # every rank: FSDP gathers
        if trainer.is_global_zero:
            trained = module.model
            if whole is not None:       # FSDP: the module's parameters are views of a shard
                trained = _build_net(cfg, task_data.label_names, tokenizer, init)
                trained.load_state_dict(whole)
            weights = Path(output_dir or run.checkpoint_dir) / "weights"
            size_mb = adapters.save_weights(trained, weights, tokenizer)
            run.log_metrics({"params/adapter_mb": size_mb,
                             "time/tokenize_seconds": datamodule.prepare_seconds},
                            step=trainer.global_step)
            run.log_artifacts(weights, "weights")
    if trainer.is_global_zero:
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    print_run_summary(run)
    return None if result is None else float(result)


def _build_net(cfg: DictConfig, label_names: list[str], tokenizer, init: Path | None):
    """The model with its adapter applied, as the run trains it (also rank 0's unsharded twin
    under FSDP, which takes the gathered weights to save)."""
    net = models.load_model(cfg.model, cfg.task, label_names, tokenizer, cfg.seed,
                            weights=None if init is None else str(init))
    return adapters.apply_adapter(net, cfg.adapter, cfg.model, cfg.task)


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
