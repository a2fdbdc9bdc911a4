"""What a run costs: throughput after warm-up (summed over ranks), peak memory, MFU, fit time."""

from __future__ import annotations

import time
from functools import lru_cache

import lightning as L
import psutil
import torch

from tunelab.startup import process_start_time

WARMUP_BATCHES = 3
# Dense bf16 peak FLOP/s of common accelerators, by a substring of the device name.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
                  "L4": 121e12, "V100": 125e12, "T4": 65e12, "RTX 4090": 165e12}


@lru_cache(maxsize=1)
def cpu_peak_flops(size: int = 1024, repeats: int = 6) -> float:
    """The machine's fp32 matmul rate, measured once per process: the CPU's 'rated peak'.
    The fastest of several products, so a moment of contention does not understate the peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - start)
    return 2 * size**3 / fastest


def peak_flops(device: torch.device) -> float | None:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in GPU_PEAK_FLOPS.items() if k in name), None)
    return cpu_peak_flops()


def memory_mb(device: torch.device) -> float:
    """Memory in use now: allocated on a GPU, resident (RSS) on the CPU. Sampled per batch for
    the CPU, because the process-lifetime peak (ru_maxrss) would carry earlier jobs of a sweep
    that ran in the same process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return psutil.Process().memory_info().rss / 2**20


class CostMeter(L.Callback):
    """Counts samples and tokens of training batches after a warm-up and logs the costs at fit end.

    FLOPs per token: 6·N with every weight training (forward 2N, backward 4N), 4·N when most
    weights are frozen (their weight gradients are skipped); N counts non-embedding weights, since
    an embedding lookup does no multiply-adds."""

    def __init__(self, total_params: int, trainable_params: int):
        self.total, self.trainable = total_params, trainable_params
        self.matmul_params = total_params
        self.samples = self.tokens = 0
        self.seen = 0
        self.t_measure = self.t_fit = self.t_last = None
        self.fit_seconds = self.startup_seconds = self.peak_mb = 0.0
        self.eval_samples, self.t_eval = 0, 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.t_fit = time.perf_counter()
        embedded = {id(p): p.numel() for m in pl_module.modules()
                    if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
        self.matmul_params = self.total - sum(embedded.values())
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == WARMUP_BATCHES:
            self.t_measure = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        self.peak_mb = max(self.peak_mb, memory_mb(pl_module.device))
        if self.seen == 1:
            self.startup_seconds = time.time() - process_start_time()
        if self.seen > WARMUP_BATCHES:
            mask = batch.get("attention_mask")
            ids = batch["input_ids"]
            self.samples += ids.shape[0]
            self.tokens += int(mask.sum()) if mask is not None else ids.numel()
            self.t_last = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_seconds = time.perf_counter() - self.t_fit
        metrics = {"time/fit_seconds": self.fit_seconds,
                   "time/startup_seconds": self.startup_seconds,
                   "perf/peak_mem_mb": max(self.peak_mb, memory_mb(pl_module.device))}
        if self.t_measure is not None and self.samples:
            # Up to the last training batch: the final checkpoint and validation are not steps.
            elapsed = self.t_last - self.t_measure
            counts = torch.tensor([self.samples, self.tokens], dtype=torch.float64,
                                  device=pl_module.device)
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
            samples, tokens = counts.tolist()
            metrics["perf/train_samples_per_sec"] = samples / elapsed
            metrics["perf/train_tokens_per_sec"] = tokens / elapsed
            per_token = (6 if self.trainable > 0.5 * self.total else 4) * self.matmul_params
            peak = peak_flops(pl_module.device)
            if peak:
                world = trainer.world_size
                metrics["perf/mfu"] = per_token * tokens / elapsed / (peak * world)
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
