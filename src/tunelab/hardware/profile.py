"""Hardware profile -> Lightning Trainer arguments, and the global batch -> per-device batch.

`auto` values (accelerator, devices, precision) are decided here, when the Trainer is built, so
every profile imports and composes on a machine without a GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import DictConfig
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecision
from torch.distributed.fsdp.wrap import CustomPolicy

from tunelab.config.errors import ConfigError
from tunelab.hardware.launch import JobDDPStrategy, JobFSDPStrategy, RankCommand

log = logging.getLogger(__name__)
GPU_NAMES = ("gpu", "cuda")
# What a Lightning precision keeps the weights in, computes in and all-reduces gradients in, on
# every strategy: FSDP is given the same policy (`fsdp_mixed_precision`), where Lightning's own
# FSDP "bf16-mixed" would all-gather weights and reduce gradients in bf16.
PRECISION_DTYPES = {
    "32-true": ("float32", "float32", "float32"),
    "bf16-mixed": ("float32", "bfloat16", "float32"),
    "16-mixed": ("float32", "float16", "float32"),
    "bf16-true": ("bfloat16", "bfloat16", "bfloat16"),
    "16-true": ("float16", "float16", "float16"),
}


def accelerator(hw: DictConfig) -> str:
    """`auto`: gpu when CUDA is visible, else cpu (Lightning's `auto` would also pick MPS/TPU)."""
    if hw.accelerator != "auto":
        return hw.accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def devices(hw: DictConfig) -> int:
    """Processes per node: `auto` is every visible GPU on a GPU profile, else one."""
    if hw.devices != "auto":
        return int(hw.devices)
    return max(1, torch.cuda.device_count()) if accelerator(hw) in GPU_NAMES else 1


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls in hardware, where bf16 autocast trains faster than fp32
    at the same accuracy (bench/RESULTS.md, issue #19 item 2). Elsewhere a CPU converts bf16 in
    software and runs slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def precision(hw: DictConfig, requested: str) -> str:
    """`auto`: bf16-mixed on a GPU that supports it, else 16-mixed; on a CPU bf16-mixed where it
    has native bf16, else full fp32. Any other value is the user's and wins."""
    if requested != "auto":
        return requested
    if accelerator(hw) not in GPU_NAMES:
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    # including_emulation=False: T4 and V100 "support" bf16 only by emulating it, slower than fp16.
    return "bf16-mixed" if torch.cuda.is_available() and \
        torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"


def check_machine(hw: DictConfig) -> None:
    """Refuse a GPU profile on a machine that cannot run it, before any data, model or MLflow run
    exists (Lightning would fail only inside fit, leaving a FAILED run). Devices are counted per
    node, where the job runs: this runs inside the job, on the node that trains."""
    if accelerator(hw) not in GPU_NAMES:
        return
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found == 0:
        why = "torch is built without CUDA" if torch.version.cuda is None else \
            f"torch has CUDA {torch.version.cuda} but sees no device"
        raise ConfigError("hardware", hw.name,
                          f"a profile this machine can run: hardware={hw.name} needs a CUDA GPU "
                          f"and this machine has none ({why}); use hardware=cpu, cpu-ddp or auto")
    if hw.devices != "auto" and int(hw.devices) > found:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(found))
        raise ConfigError("hardware.devices", hw.devices,
                          f"at most {found} with hardware={hw.name}: this machine shows {found} "
                          f"GPU(s) ({names}); hardware.devices=auto uses every one")


def precision_dtypes(resolved: str) -> dict[str, str]:
    """The dtypes a resolved precision means, recorded so that runs whose strategies treat the
    same flag differently do not look alike."""
    if resolved not in PRECISION_DTYPES:
        return {}
    weights, compute, reduce = PRECISION_DTYPES[resolved]
    return {"hardware.resolved.weights_dtype": weights,
            "hardware.resolved.compute_dtype": compute,
            "hardware.resolved.reduce_dtype": reduce}


def fsdp_mixed_precision(resolved: str) -> MixedPrecision | None:
    """FSDP's policy for a mixed precision as DDP runs it: fp32 sharded weights and fp32
    gradient reduction, half-precision compute (the all-gathered copy is cast to it)."""
    if not resolved.endswith("-mixed"):
        return None
    _, compute, reduce = PRECISION_DTYPES[resolved]
    return MixedPrecision(param_dtype=getattr(torch, compute), reduce_dtype=getattr(torch, reduce),
                          buffer_dtype=torch.float32)


def fsdp_wrap_policy(net: torch.nn.Module) -> CustomPolicy:
    """One FSDP unit per transformer block (the classes transformers declares unsplittable in
    `_no_split_modules`), so only one block's weights are whole at a time; and, when part of the
    model is frozen (PEFT, head), every leaf whose weights all train in a unit of its own, so
    LoRA's matrices never share a flat parameter (nor its gradient memory) with the frozen base."""
    names = {name for m in net.modules() for name in getattr(m, "_no_split_modules", None) or ()}
    blocks = {type(m) for m in net.modules() if type(m).__name__ in names}
    partly_frozen = any(not p.requires_grad for p in net.parameters())

    def wrap(module: torch.nn.Module) -> bool:
        if type(module) in blocks:
            return True
        own = list(module.parameters(recurse=False))
        return partly_frozen and not list(module.children()) and bool(own) and \
            all(p.requires_grad for p in own)
    return CustomPolicy(wrap)


def world_size(hw: DictConfig) -> int:
    return devices(hw) * hw.num_nodes


def per_device_batch(global_batch: int, hw: DictConfig, accumulate: int) -> int:
    """`data.batch_size` is the global batch: split over every process and accumulation step."""
    return max(1, global_batch // (world_size(hw) * accumulate))


def strategy(hw: DictConfig, resolved_precision: str, job: DictConfig | None = None,
             run_dir: Path | None = None, net: torch.nn.Module | None = None):
    """The profile's strategy. With the job's config, DDP and FSDP start ranks > 0 on that config
    (see hardware.launch); without it, Lightning's own launcher re-runs the command line. `net`
    (the model to train) gives FSDP its wrap policy."""
    if hw.strategy == "fsdp":
        # use_orig_params lets PEFT mix frozen and trainable weights in one unit (a block).
        kwargs = {"process_group_backend": hw.process_group_backend, "use_orig_params": True,
                  "mixed_precision": fsdp_mixed_precision(resolved_precision),
                  "auto_wrap_policy": None if net is None else fsdp_wrap_policy(net)}
        return FSDPStrategy(**kwargs) if job is None else \
            JobFSDPStrategy(RankCommand(job, run_dir or Path.cwd()), **kwargs)
    if hw.strategy != "ddp" or job is None:
        return hw.strategy
    # broadcast_buffers=False: no collective in an eval forward, so ranks may run unequal numbers
    # of eval batches (eval sets are split unpadded); transformers' buffers are constants.
    return JobDDPStrategy(RankCommand(job, run_dir or Path.cwd()),
                          process_group_backend=hw.process_group_backend, broadcast_buffers=False)


def trainer_kwargs(hw: DictConfig, trainer: DictConfig, job: DictConfig | None = None,
                   run_dir: Path | None = None, net: torch.nn.Module | None = None) -> dict:
    """Lightning Trainer arguments for the profile and the loop settings. `job` (the checked
    config) and `run_dir` (the job's output folder) let a DDP/FSDP job start its own ranks; `net`
    lets FSDP shard it block by block."""
    resolved = precision(hw, trainer.precision)
    kwargs = {
        "accelerator": accelerator(hw),
        "devices": hw.devices,
        "num_nodes": hw.num_nodes,
        "strategy": strategy(hw, resolved, job, run_dir, net),
        "precision": resolved,
        "max_epochs": trainer.max_epochs if trainer.max_epochs is not None else -1,
        "max_steps": trainer.max_steps,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "log_every_n_steps": trainer.log_every_n_steps,
        "enable_progress_bar": trainer.enable_progress_bar,
        "deterministic": trainer.deterministic,
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,
    }
    if trainer.val_check_interval is not None:
        # An int counts optimizer steps across epochs; Lightning counts batches (x accumulation).
        kwargs["val_check_interval"] = trainer.val_check_interval * trainer.accumulate_grad_batches
        kwargs["check_val_every_n_epoch"] = None
    return kwargs


def profile_params(hw: DictConfig, trainer: DictConfig, global_batch: int) -> dict:
    """The facts of the profile as run (its `auto` values decided), recorded as params so runs on
    different hardware compare. `hardware.global_batch` differs from `data.batch_size` only when
    `devices=auto` found a device count that does not divide it."""
    world, accumulate = world_size(hw), trainer.accumulate_grad_batches
    per_device = per_device_batch(global_batch, hw, accumulate)
    if per_device * world * accumulate != global_batch:
        log.warning("data.batch_size=%d does not split over %d processes x %d accumulation steps; "
                    "the global batch is %d", global_batch, world, accumulate,
                    per_device * world * accumulate)
    return {"hardware.world_size": world, "hardware.per_device_batch": per_device,
            "hardware.global_batch": per_device * world * accumulate,
            "hardware.resolved.accelerator": accelerator(hw),
            "hardware.resolved.devices": devices(hw),
            "hardware.resolved.num_nodes": hw.num_nodes,
            "hardware.resolved.precision": precision(hw, trainer.precision),
            "hardware.resolved.strategy": hw.strategy if hw.strategy != "auto" else
            ("ddp" if world > 1 else "single_device"),
            **precision_dtypes(precision(hw, trainer.precision))}


def full_state_dict(trainer: L.Trainer, attribute: str) -> dict[str, torch.Tensor] | None:
    """The state dict of the LightningModule's `attribute` (the model) with every tensor whole,
    on rank 0; None where the module's own tensors are whole already (every strategy but FSDP).
    Under FSDP a rank's parameters are views into its own shard (pytorch #136314), so saving
    `module.model` wrote a fragment: torch's distributed-checkpoint API gathers the full tensors
    onto rank 0's CPU instead (a collective every rank must join), named as in the unwrapped
    model (no FSDP or checkpoint-wrapper prefixes), so an unsharded twin loads them strictly."""
    if not isinstance(trainer.strategy, FSDPStrategy):
        return None
    whole = get_model_state_dict(trainer.strategy.model, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True))
    prefix = f"{attribute}."
    return {key.removeprefix(prefix): value for key, value in whole.items()
            if key.startswith(prefix)}
