"""The LightningModule: forward, task loss (+ λ·aux loss), torchmetrics per split, AdamW + schedule."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch
from omegaconf import DictConfig
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MaxMetric, MeanMetric, MetricCollection, MinMetric
from transformers import PreTrainedTokenizerBase

from tunelab import tasks
from tunelab.adapters.selection import HEAD_NAMES, is_head_parameter
from tunelab.config import ConfigError
from tunelab.models.generative import GenerativeHead
from tunelab.models.metrics import reported, task_metrics
from tunelab.models.objective import SelfSupervised
from tunelab.models.qa_metrics import FEATURE_KEYS, bind_references, update_spans


def _warmup_then_linear_decay(step: int, warmup: int, total: int) -> float:
    """The lr factor at `step`: up from 0 to 1 over `warmup` steps, then down to 0 at `total`,
    as transformers' `get_linear_schedule_with_warmup`. Built on torch's LambdaLR because that
    function's module (transformers.optimization -> trainer_utils) imports peft whenever it is
    installed, 0.2 s before the first step of a run that does not use peft."""
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class TuneModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, task: DictConfig, optim: DictConfig,
                 objective: DictConfig, num_labels: int | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None, family: str = "encoder",
                 label_names: list[str] | None = None):
        super().__init__()
        self.model, self.task, self.optim, self.objective = model, task, optim, objective
        self.spec = tasks.spec_for(task, family)
        self.generative = GenerativeHead(task, tokenizer, family, objective, label_names) \
            if self.spec.generative else None
        self.aux = SelfSupervised(tokenizer, family, objective.mlm_probability) \
            if objective.aux_weight > 0 else None
        names = reported(self.spec, task)
        self.val_metrics = task_metrics(self.spec, num_labels, names).clone(prefix="val/")
        self.test_metrics = task_metrics(self.spec, num_labels, names).clone(prefix="test/")
        # what the run reports: a metric object may compute more (SQuAD's em with f1)
        self.reported = {f"{split}/{name}" for split in ("val", "test") for name in names}
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.monitor = f"val/{task.monitor}"
        self.val_best = MaxMetric() if task.mode == "max" else MinMetric()
        self.val_best.persistent(True)      # the best so far survives a resume from a checkpoint
        self.last_val_step = -1

    def forward(self, **batch):
        return self.model(**{k: v for k, v in batch.items() if k not in FEATURE_KEYS})

    def setup(self, stage: str) -> None:
        """QA metrics score answer text, so they take the contexts and gold answers of the data
        this trainer evaluates."""
        if "squad" in self.val_metrics:
            task_data = self.trainer.datamodule.task_data
            bind_references(self.val_metrics, task_data, "validation")
            bind_references(self.test_metrics, task_data, "test")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.generative.forward(self.model, batch) if self.generative is not None else \
            self(**batch, **({"output_hidden_states": True} if self.aux is not None else {}))
        loss = out.loss
        if self.aux is not None:
            aux = self.aux.loss(self.model, batch, out)
            self.log_dict({"train/task_loss": loss, "train/aux_loss": aux}, on_step=True,
                          on_epoch=False, sync_dist=True)
            loss = loss + self.objective.aux_weight * aux
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"train/loss is {loss.item()} at step {self.global_step}: the run diverged "
                f"(try a lower optim.lr than {self.optim.lr})")
        # sync_dist: under DDP, the mean over the global batch (one scalar all-reduce a step),
        # as on one device, not rank 0's share of it.
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        return loss

    def _eval_step(self, batch: dict, metrics: MetricCollection, mean: MeanMetric) -> None:
        if self.generative is not None:
            return self.generative.eval_step(self.model, batch, metrics, mean)
        if self.spec.windows:
            return update_spans(self(**batch), batch, metrics, mean)
        out = self(**batch)
        mean.update(out.loss, weight=batch["labels"].shape[0])
        metrics.update(out.logits.argmax(-1), batch["labels"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, self.val_loss)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, self.test_loss)

    def on_validation_epoch_end(self) -> None:
        values = self._reported(self.val_metrics.compute())
        values["val/loss"] = self.val_loss.compute()
        self.val_best.update(values[self.monitor])
        values[f"{self.monitor}_best"] = self.val_best.compute()
        self.log_dict(values, prog_bar=True)
        self.val_metrics.reset()
        self.val_loss.reset()
        self.last_val_step = self.global_step

    def on_test_epoch_end(self) -> None:
        values = self._reported(self.test_metrics.compute())
        values["test/loss"] = self.test_loss.compute()
        self.log_dict(values)
        self.test_metrics.reset()
        self.test_loss.reset()

    def _reported(self, values: dict) -> dict:
        return {key: value for key, value in values.items() if key in self.reported}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer,
                                    gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip by norm with fused AdamW under every precision and strategy. Lightning refuses
        both: its AMP plugin any optimizer that unscales inside `step` (fused AdamW, even under
        bf16-mixed, which has no scaler; Lightning #21435), its FSDP plugin clip-by-norm at all
        (Lightning #19235). So fp16's scaler unscales here first (a fused step then skips its own
        unscale), and FSDP clips with its own `clip_grad_norm_`, the norm over every shard."""
        if not gradient_clip_val or gradient_clip_algorithm == "value":
            return self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)
        wrapped = self.trainer.strategy.model
        if isinstance(wrapped, FullyShardedDataParallel):
            wrapped.clip_grad_norm_(gradient_clip_val)
        else:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Lightning's step, then the gradients freed at once. Lightning zeroes them inside the
        next step's closure, after its forward, so every forward ran beside the last step's
        gradients: one more copy of the trainable weights at the peak (87 MB of RSS on MiniLM's
        full fine-tune). A hand loop and HF Trainer free them after the step, as here; under
        gradient accumulation this runs once per accumulated step, after the update used them."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        optimizer.zero_grad(set_to_none=True)

    def param_groups(self) -> list[dict]:
        """AdamW's groups: weight decay on matrices only (not biases or norms), and the task head
        at `optim.head_lr` when it is set (a fresh head learns from zero; at a short budget it can
        want a far higher rate than the body or an adapter, and one shared rate then ranks the
        head's rate more than the method)."""
        head_lr = self.optim.get("head_lr")
        # (head?, decays?) -> parameters; the body's two groups always, in this order (a
        # checkpoint's optimizer state is matched to its groups by position)
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {
            key: [] for key in ((False, True), (False, False), (True, True), (True, False))}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                head = head_lr is not None and is_head_parameter(name)
                groups[head, param.ndim >= 2 and "norm" not in name.lower()].append(param)
        if head_lr is not None and not groups[True, True] + groups[True, False]:
            raise ConfigError("optim.head_lr", head_lr, f"null: this model trains no task head "
                              f"(a parameter under one of {list(HEAD_NAMES)})")
        return [{"params": params, "weight_decay": self.optim.weight_decay if decays else 0.0,
                 **({"lr": head_lr} if head else {})}
                for (head, decays), params in groups.items() if params or not head]

    def configure_optimizers(self):
        groups = self.param_groups()
        params = [p for group in groups for p in group["params"]]
        # Fused AdamW updates every tensor in one kernel pass (what HF Trainer uses by default);
        # torch's CPU default loops tensor by tensor, ~15x slower for a full fine-tune's step.
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        optimizer = torch.optim.AdamW(groups, lr=self.optim.lr, betas=tuple(self.optim.betas),
                                      fused=fused or None)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = math.ceil(self.optim.warmup_ratio * total)
        schedule = LambdaLR(optimizer, partial(_warmup_then_linear_decay, warmup=warmup,
                                               total=total))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
