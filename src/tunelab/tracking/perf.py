"""What a run costs: time, throughput, FLOPs and MFU, its own peak memory, energy and money.

Throughput is what a user waits for: the wall clock from the end of the last warm-up step to the
end of the last training step, with everything between steps (fetching and collating batches,
callbacks, logging, checkpoint writes), less the validation inside fit, which has its own rate; a
run that validated every 2 steps recorded a third of the throughput of one that did not. The time
inside steps alone is recorded beside it (`time/train_step_seconds`), so the gap between the two
is the loop's own overhead. The clock is the one the benchmarks' hand-written loops use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

import lightning as L
import torch

from tunelab.startup import process_start_time
from tunelab.tracking.energy import EnergyMeter
from tunelab.tracking.peaks import peak_flops

WARMUP_BATCHES = 3
# Methods whose trainable weights all sit in the task head: the backward pass stops there.
HEAD_ONLY_METHODS = ("head",)
MB = 2**20


def matmul_params(model: torch.nn.Module) -> tuple[int, int]:
    """(all, trainable) weights that take part in multiply-adds: those of every module but
    embedding lookups. A weight tied to an embedding and used by a linear head (an LM head) counts,
    since the head multiplies by it."""
    owned: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        if not isinstance(module, torch.nn.Embedding):
            owned.update({id(p): p for p in module.parameters(recurse=False)})
    return (sum(p.numel() for p in owned.values()),
            sum(p.numel() for p in owned.values() if p.requires_grad))


def train_flops_per_token(model: torch.nn.Module, adapter_method: str) -> float:
    """Training FLOPs per token, counted per method (attention's sequence-length term left out):
    forward 2N; gradients with respect to activations 2N wherever the backward pass runs; weight
    gradients 2N_trainable, so frozen weights cost none. Full fine-tuning is 6N, LoRA about 4N,
    and head-only training 2N + 4N_head, since no backward runs through the frozen body."""
    total, trainable = matmul_params(model)
    activation_grads = trainable if adapter_method in HEAD_ONLY_METHODS else total
    return 2 * total + 2 * activation_grads + 2 * trainable


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes held by the storages of `tensors`, each storage once (views and tied weights)."""
    storages = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def held_tensors(trainer: L.Trainer, module: torch.nn.Module) -> list[torch.Tensor]:
    """What a run keeps between steps: weights, buffers and optimizer state (TuneModule frees
    the gradients after each optimizer step)."""
    held = [*module.parameters(), *module.buffers()]
    for optimizer in trainer.optimizers:
        for state in optimizer.state.values():
            held += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return held


class StepMemory:
    """The run's own peak memory: what it holds between steps plus the peak a step adds on top
    (its gradients and activations).

    A shared process cannot tell runs apart by its RSS (the jobs of a basic multirun share one:
    746 -> 828 MB over six identical jobs), and even RSS growth over a fit varied by 30% between
    identical jobs. So the held part is counted from the run's tensors, and a step's part is
    measured by the CUDA allocator on a GPU (peak allocated after the first optimizer step, over
    what was allocated then) and, on the CPU, which has no allocator counter, counted from the
    activations autograd saves for backward (the bulk of a step's memory, temporaries excluded)."""

    def __init__(self) -> None:
        self.held_ptrs: set[int] = set()
        self.saved: dict[int, int] = {}
        self.saved_peak = 0
        self.cuda_base: int | None = None
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):     # sparse or wrapper tensors: no storage
            return t.detach()
        if storage.data_ptr() not in self.held_ptrs:
            self.saved[storage.data_ptr()] = storage.nbytes()
        return t.detach()       # not `t`: autograd would hold a reference cycle (torch's warning)

    def start(self, module: torch.nn.Module) -> None:
        self.held_ptrs = {t.untyped_storage().data_ptr()
                          for t in [*module.parameters(), *module.buffers()]}

    def batch_start(self) -> None:
        self.saved = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()

    def stop_counting(self) -> None:
        """Leave the hooks before backward (a checkpointed model's recomputation there is not a
        forward's activations), and when a step raised: they would count the next job's steps."""
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None

    def batch_end(self, trainer: L.Trainer, device: torch.device) -> None:
        self.stop_counting()
        self.saved_peak = max(self.saved_peak, sum(self.saved.values()))
        if device.type == "cuda" and self.cuda_base is None and trainer.global_step >= 1:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.cuda_base = torch.cuda.memory_allocated(device)

    def peak_bytes(self, trainer: L.Trainer, module: torch.nn.Module,
                   device: torch.device) -> int:
        held = tensor_bytes(held_tensors(trainer, module))
        if device.type == "cuda" and self.cuda_base is not None:
            # the allocator's peak over what a step starts from: gradients and activations
            return held + torch.cuda.max_memory_allocated(device) - self.cuda_base
        # backward builds a gradient for every trainable parameter while the last activations
        # are still saved
        grads = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
        return held + grads + self.saved_peak


# what CostMeter carries from an attempt into a checkpoint: counts, and seconds by clock
CARRIED = ("samples", "tokens", "joules", "fit_seconds", "train_seconds", "wall_seconds")


class CostMeter(L.Callback):
    """Times training after a warm-up, counts its samples and tokens, and logs the costs at fit
    end; `tag` records where the peak FLOP/s and the energy came from.

    Two clocks, both synchronised on a GPU: the wall clock between step ends less validation
    (the throughput), and the time from batch start to batch end (`time/train_step_seconds`).

    The totals travel in checkpoints (summed over ranks, as every rank writes one together), so
    a resumed run's time, money, energy and throughput cover every attempt up to the checkpoint
    it resumed from, not its last attempt alone; only the start-up is the last process's."""

    def __init__(self, adapter_method: str, usd_per_hour: float | None = None,
                 tag: Callable[[dict[str, str]], None] | None = None):
        self.adapter_method, self.usd_per_hour = adapter_method, usd_per_hour
        self.tag = tag or (lambda tags: None)
        self.samples = self.tokens = self.seen = 0
        self.train_seconds = self.fit_seconds = self.startup_seconds = 0.0
        self.wall_seconds = self.validating_seconds = 0.0
        self.t_fit = self.t_batch = self.t_eval = self.t_wall = self.t_validation = 0.0
        self.eval_samples = 0
        self.per_token = 0.0
        self.memory = StepMemory()
        self.energy = EnergyMeter()
        self.earlier = dict.fromkeys(CARRIED, 0.0)    # earlier attempts' totals (a resume)
        self._strategy = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.t_fit = time.perf_counter()
        self._strategy = trainer.strategy
        self.per_token = train_flops_per_token(pl_module, self.adapter_method)
        self.memory.start(pl_module)
        first_on_node = int(os.environ.get("LOCAL_RANK", "0")) == 0
        self.energy = EnergyMeter.start(pl_module.device, first_on_node)

    def _sync(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.memory.batch_start()
        if self.seen >= WARMUP_BATCHES:
            self._sync(pl_module.device)
            self.t_batch = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == WARMUP_BATCHES:
            self._sync(pl_module.device)
            self.t_wall = time.perf_counter()
        elif self.seen > WARMUP_BATCHES:
            self._sync(pl_module.device)
            now = time.perf_counter()
            self.train_seconds += now - self.t_batch
            self.wall_seconds = now - self.t_wall - self.validating_seconds
            mask = batch.get("attention_mask")
            ids = batch["input_ids"]
            self.samples += ids.shape[0]
            self.tokens += int(mask.sum()) if mask is not None else ids.numel()
        if self.seen == 1:
            self.startup_seconds = time.time() - process_start_time()
        self.memory.batch_end(trainer, pl_module.device)
        self.energy.sample()

    def on_validation_start(self, trainer, pl_module) -> None:
        self.t_validation = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.seen >= WARMUP_BATCHES:     # inside the timed window: not the user's training
            self.validating_seconds += time.perf_counter() - self.t_validation

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.memory.stop_counting()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.memory.stop_counting()

    def _totals(self) -> dict[str, float]:
        """Every attempt's totals so far: this one's, summed over ranks (one all-reduce, which
        every rank makes together: at fit end, or into a checkpoint), plus the earlier ones'."""
        joules = self.energy.joules()
        here = torch.tensor([self.samples, self.tokens, joules or 0.0], dtype=torch.float64,
                            device=self._strategy.root_device)
        samples, tokens, joules_sum = self._strategy.reduce(here, reduce_op="sum").tolist()
        now = {"samples": samples, "tokens": tokens, "joules": joules_sum,
               "fit_seconds": time.perf_counter() - self.t_fit,
               "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds}
        return {key: self.earlier[key] + now[key] for key in CARRIED}

    def state_dict(self) -> dict[str, float]:
        return self._totals() if self._strategy is not None else dict(self.earlier)

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.earlier = {key: float(state_dict.get(key, 0.0)) for key in CARRIED}

    def on_fit_end(self, trainer, pl_module) -> None:
        device = pl_module.device
        totals = self._totals()
        self.fit_seconds = totals["fit_seconds"]
        self.train_seconds, self.wall_seconds = totals["train_seconds"], totals["wall_seconds"]
        samples, tokens, joules_sum = totals["samples"], totals["tokens"], totals["joules"]
        peak_mem = trainer.strategy.reduce(torch.tensor(
            float(self.memory.peak_bytes(trainer, pl_module, device)), dtype=torch.float64,
            device=device), reduce_op="max")
        metrics = {"time/fit_seconds": self.fit_seconds,
                   "time/startup_seconds": self.startup_seconds,
                   "perf/peak_mem_mb": float(peak_mem) / MB,
                   "perf/flops_per_token": self.per_token}
        if samples:     # some step ran after the warm-up: a run of 3 steps or fewer timed none
            metrics["time/train_step_seconds"] = self.train_seconds
            metrics["time/train_wall_seconds"] = self.wall_seconds
        if self.usd_per_hour is not None:
            metrics["cost/usd"] = self.usd_per_hour * trainer.num_nodes * self.fit_seconds / 3600
        tags = {}
        if self.energy.source is not None:     # a counter exists (its reading is in totals)
            metrics["perf/energy_j"] = joules_sum
            tags["perf.energy_source"] = self.energy.source
        if self.wall_seconds > 0 and samples:
            metrics["perf/train_samples_per_sec"] = samples / self.wall_seconds
            metrics["perf/train_tokens_per_sec"] = tokens / self.wall_seconds
            peak, tags["perf.peak_source"] = peak_flops(device, trainer.precision)
            if peak:
                metrics["perf/peak_flops"] = peak
                metrics["perf/mfu"] = \
                    self.per_token * tokens / self.wall_seconds / (peak * trainer.world_size)
        if trainer.is_global_zero:
            self.tag(tags)
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)

    def on_test_start(self, trainer, pl_module) -> None:
        self.eval_samples, self.t_eval = 0, time.perf_counter()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                          dataloader_idx=0) -> None:
        self.eval_samples += batch["input_ids"].shape[0]

    def on_test_end(self, trainer, pl_module) -> None:
        elapsed = time.perf_counter() - self.t_eval
        if trainer.logger is not None and self.eval_samples:
            trainer.logger.log_metrics({"perf/eval_samples_per_sec": self.eval_samples / elapsed},
                                       step=trainer.global_step)
