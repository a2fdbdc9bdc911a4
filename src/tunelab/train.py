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
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from tunelab import adapters, data, hardware, models
from tunelab.config import check_config
from tunelab.config.printing import print_tree
from tunelab.sweeps import SWEEP_ENV, sweep_id_for
from tunelab.tracking import TrackedRun, is_rank_zero

log = logging.getLogger("tunelab")


def _conf_dir() -> str:
    packaged = Path(__file__).parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf")


def train(cfg: DictConfig, overrides: list[str] = (), sweep_id: str | None = None,
          output_dir: Path | None = None) -> float | None:
    """Run one logical run and return the metric sweepers optimise (val/<task.monitor>)."""
    cfg = check_config(cfg)
    if is_rank_zero():
        print_tree(cfg)
    cache_dir = Path(cfg.paths.cache_dir)
    raw = data.load_splits(cfg.data, cfg.task, cache_dir)
    task_data = data.task_data_for(raw, cfg.data, cfg.task)
    run = TrackedRun(cfg, list(overrides), raw.digest, sweep_id).open()
    monitor = f"val/{cfg.task.monitor}"
    if run.status == "skipped":
        log.info("config %s already has FINISHED run %s; skipping "
                 "(tracking.on_finished=rerun trains again)", run.config_hash, run.run_id)
        return run.final_metric(monitor)
    with run:
        L.seed_everything(cfg.seed, workers=True)
        tokenizer = models.load_tokenizer(cfg.model)
        net = models.load_model(cfg.model, cfg.task, task_data.label_names, tokenizer, cfg.seed)
        net = adapters.apply_adapter(net, cfg.adapter, cfg.model, cfg.task)
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
            num_workers=cfg.data.num_workers, cache_dir=cache_dir)
        module = models.TuneModule(net, cfg.task, cfg.optim, cfg.objective,
                                   num_labels=len(task_data.label_names))
        checkpoints = ModelCheckpoint(dirpath=run.checkpoint_dir, filename="step{step}",
                                      every_n_train_steps=cfg.trainer.checkpoint_every_n_steps,
                                      save_last=True, save_top_k=1, auto_insert_metric_name=False)
        trainer = L.Trainer(**hardware.trainer_kwargs(cfg.hardware, cfg.trainer),
                            logger=run.logger() or False, default_root_dir=output_dir,
                            callbacks=[*run.callbacks(counts), checkpoints])
        resume = run.checkpoint_dir / "last.ckpt"
        trainer.fit(module, datamodule,
                    ckpt_path=str(resume) if run.status == "resumed" and resume.exists() else None)
        if module.last_val_step != trainer.global_step:
            trainer.validate(module, datamodule, verbose=False)
        result = trainer.callback_metrics.get(monitor)
        if datamodule.has_test:
            trainer.test(module, datamodule, verbose=False)
        if trainer.is_global_zero:
            weights = Path(output_dir or run.checkpoint_dir) / "weights"
            size_mb = adapters.save_weights(module.model, weights, tokenizer)
            run.log_metrics({"params/adapter_mb": size_mb}, step=trainer.global_step)
            run.log_artifacts(weights, "weights")
    if trainer.is_global_zero:
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    return None if result is None else float(result)


@hydra.main(config_path=_conf_dir(), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    sweep_id = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_id = os.environ.get(SWEEP_ENV) or sweep_id_for(hydra_cfg.sweep.dir)
    return train(cfg, list(hydra_cfg.overrides.task), sweep_id,
                 Path(hydra_cfg.runtime.output_dir))


if __name__ == "__main__":
    main()
