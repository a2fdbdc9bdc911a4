"""The LightningModule: forward, task loss (+ λ·aux loss), torchmetrics per split, AdamW + schedule."""

from __future__ import annotations

import math

import lightning as L
import torch
from omegaconf import DictConfig
from torchmetrics import MaxMetric, MeanMetric, MetricCollection, MinMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import get_linear_schedule_with_warmup


def task_metrics(task: DictConfig, num_labels: int | None) -> MetricCollection:
    """torchmetrics objects for the task's metrics; values are fractions in [0, 1]."""
    if task.kind == "classification":
        return MetricCollection({
            "acc": MulticlassAccuracy(num_classes=num_labels, average="micro"),
            "f1": MulticlassF1Score(num_classes=num_labels, average="macro"),
        })
    raise NotImplementedError(f"metrics for task kind {task.kind}")


class TuneModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, task: DictConfig, optim: DictConfig,
                 objective: DictConfig, num_labels: int | None = None):
        super().__init__()
        self.model, self.task, self.optim, self.objective = model, task, optim, objective
        self.val_metrics = task_metrics(task, num_labels).clone(prefix="val/")
        self.test_metrics = task_metrics(task, num_labels).clone(prefix="test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.monitor = f"val/{task.monitor}"
        self.val_best = MaxMetric() if task.mode == "max" else MinMetric()
        self.last_val_step = -1

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self(**batch).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"train/loss is {loss.item()} at step {self.global_step}: the run diverged "
                f"(try a lower optim.lr than {self.optim.lr})")
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict, metrics: MetricCollection, mean: MeanMetric) -> None:
        out = self(**batch)
        mean.update(out.loss, weight=batch["labels"].shape[0])
        metrics.update(out.logits.argmax(-1), batch["labels"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, self.val_loss)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, self.test_loss)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        values["val/loss"] = self.val_loss.compute()
        self.val_best.update(values[self.monitor])
        values[f"{self.monitor}_best"] = self.val_best.compute()
        self.log_dict(values, prog_bar=True)
        self.val_metrics.reset()
        self.val_loss.reset()
        self.last_val_step = self.global_step

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        values["test/loss"] = self.test_loss.compute()
        self.log_dict(values)
        self.test_metrics.reset()
        self.test_loss.reset()

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.optim.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.optim.lr, betas=tuple(self.optim.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = math.ceil(self.optim.warmup_ratio * total)
        schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
