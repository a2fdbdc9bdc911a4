"""The GPU and multi-process paths that a CPU can run: mixed precision with fused AdamW and
clipping (bf16-mixed and 16-mixed run the same Lightning precision plugins on CPU as on a GPU),
real Trainers for the GPU profiles with only CUDA's presence faked, FSDP's wrap policy and save
path, a machine that cannot run its profile, and two-process gloo runs for the resume decision,
per-rank dropout and unpadded evaluation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from omegaconf import open_dict
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from tests.conftest import prepared_data, train_runs
from tunelab import adapters, hardware, models
from tunelab.config import ConfigError, check_config
from tunelab.hardware.launch import JobDDPStrategy, JobFSDPStrategy
from tunelab.train import train

ROOT = Path(__file__).resolve().parents[1]


# ---- mixed precision x fused AdamW x clipping ----------------------------------------------------
class GradNorm(L.Callback):
    """The total gradient norm each optimizer step used: read as the optimizer's step ends (the
    update leaves the clipped, unscaled gradients as they were; TuneModule frees them after)."""

    def __init__(self):
        self.norms: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        trainer.optimizers[0].register_step_post_hook(lambda optimizer, args, kwargs: self.record(
            [p.grad for group in optimizer.param_groups for p in group["params"]]))

    def record(self, grads: list[torch.Tensor | None]) -> None:
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g.float()) for g in grads if g is not None]))))


def tiny_fit(cfg, clip: float | None, steps: int = 3) -> tuple[list[float], torch.optim.Optimizer]:
    cfg, raw, task_data, tokenizer, dm = prepared_data(cfg)
    net = models.load_model(cfg.model, cfg.task, task_data.label_names, tokenizer, cfg.seed)
    net = adapters.apply_adapter(net, cfg.adapter, cfg.model, cfg.task)
    module = models.TuneModule(net, cfg.task, cfg.optim, cfg.objective,
                               num_labels=len(task_data.label_names), tokenizer=tokenizer)
    with open_dict(cfg):
        cfg.trainer.gradient_clip_val = clip
        cfg.trainer.max_steps = steps
    norms = GradNorm()
    trainer = L.Trainer(**hardware.trainer_kwargs(cfg.hardware, cfg.trainer), logger=False,
                        enable_checkpointing=False, callbacks=[norms], limit_val_batches=0)
    trainer.fit(module, dm)
    return norms.norms, trainer.optimizers[0]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_mixed_precision_clips_with_fused_adamw(tiny_cfg, one_thread, precision, adapter):
    """Lightning's AMP plugin refused to clip for any fused optimizer ("does not allow for
    gradient clipping because it performs unscaling of gradients internally"): every GPU run
    crashed at its first step. Now the step clips to the norm asked for, on fused AdamW."""
    cfg = tiny_cfg(f"adapter={adapter}", f"hardware.precision={precision}",
                   "data.synthetic.train_size=64", "data.batch_size=8")
    clipped, optimizer = tiny_fit(cfg, clip=1e-3)
    assert optimizer.defaults["fused"] is True
    assert len(clipped) == 3 and all(norm <= 1e-3 * 1.01 for norm in clipped), clipped
    free, _ = tiny_fit(cfg, clip=None)
    assert min(free) > 1e-2, free                # the clip did the work, not small gradients


# ---- every profile builds a real Trainer -------------------------------------------------------
def hw_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir
    from tests.conftest import CONF
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return check_config(compose("train", overrides=["model=tiny-bert", *overrides]))


@pytest.fixture
def fake_gpus(monkeypatch):
    """CUDA's presence, faked where Lightning and torch ask for it: N devices, bf16 native or
    emulated only. Nothing runs on them; Trainers and strategies are built for real."""
    def install(count: int, native_bf16: bool = True):
        import lightning.fabric.accelerators.cuda as fabric_cuda
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(fabric_cuda, "num_cuda_devices", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True: native_bf16 or including_emulation)
    return install


@pytest.mark.parametrize("name, strategy, plugin, devices", [
    ("gpu", None, MixedPrecision, 1),
    ("multi-gpu", JobDDPStrategy, MixedPrecision, 2),
    ("fsdp", JobFSDPStrategy, FSDPPrecision, 2),
])
def test_gpu_profiles_build_real_trainers(tmp_path, fake_gpus, name, strategy, plugin, devices):
    fake_gpus(2)
    cfg = hw_cfg(f"hardware={name}")
    net = models.skeleton(cfg.model, cfg.task)
    trainer = L.Trainer(**hardware.trainer_kwargs(cfg.hardware, cfg.trainer, cfg, tmp_path, net),
                        logger=False)
    assert trainer.num_devices == devices
    assert isinstance(trainer.precision_plugin, plugin)
    assert trainer.precision_plugin.precision == "bf16-mixed"
    if strategy is not None:
        assert isinstance(trainer.strategy, strategy)
    params = hardware.profile_params(cfg.hardware, cfg.trainer, cfg.data.batch_size)
    assert (params["hardware.resolved.weights_dtype"], params["hardware.resolved.compute_dtype"],
            params["hardware.resolved.reduce_dtype"]) == ("float32", "bfloat16", "float32")
    if name == "fsdp":
        # Lightning's own FSDP bf16-mixed reduced gradients (and kept buffers) in bf16.
        policy = trainer.strategy.mixed_precision_config
        assert (policy.param_dtype, policy.reduce_dtype, policy.buffer_dtype) == \
            (torch.bfloat16, torch.float32, torch.float32)
        assert trainer.strategy.kwargs["use_orig_params"] is True
        assert "auto_wrap_policy" in trainer.strategy.kwargs


def test_auto_precision_skips_emulated_bf16(fake_gpus):
    """T4 and V100 report bf16 support only by counting emulation: fp16 is the fast choice."""
    cfg = hw_cfg("hardware=gpu")
    fake_gpus(1, native_bf16=False)
    assert hardware.precision(cfg.hardware, "auto") == "16-mixed"
    fake_gpus(1, native_bf16=True)
    assert hardware.precision(cfg.hardware, "auto") == "bf16-mixed"


def test_fsdp_wraps_each_block_and_lora_apart(tiny_cfg):
    """One FSDP unit per transformer block, and LoRA's trainable matrices in units of their own,
    so no flat parameter mixes frozen and trainable weights (checked on the policy's decisions:
    FSDP itself needs an accelerator in torch 2.13)."""
    cfg = check_config(tiny_cfg("adapter=lora"))
    net = adapters.apply_adapter(models.skeleton(cfg.model, cfg.task), cfg.adapter, cfg.model,
                                 cfg.task)
    policy = hardware.profile.fsdp_wrap_policy(net)
    wrapped = {name for name, m in net.named_modules() if policy._lambda_fn(m)}
    blocks = [n for n, m in net.named_modules() if type(m).__name__ == "BertLayer"]
    assert blocks and set(blocks) <= wrapped
    lora = {n for n in wrapped if ".lora_" in n}
    assert lora and all(all(p.requires_grad for p in net.get_submodule(n).parameters())
                        for n in lora)
    # Whatever is left to a block's own unit is frozen: trainable weights sit in their own units.
    for block in blocks:
        inner = {n for n in wrapped if n.startswith(block + ".")}
        left = [p for n, p in net.get_submodule(block).named_parameters(prefix=block)
                if not any(n.startswith(w + ".") for w in inner)]
        assert left and not any(p.requires_grad for p in left)


def built(cfg) -> torch.nn.Module:
    tokenizer = models.load_tokenizer(cfg.model)
    net = models.load_model(cfg.model, cfg.task, ["neg", "pos"], tokenizer, cfg.seed)
    return adapters.apply_adapter(net, cfg.adapter, cfg.model, cfg.task)


@pytest.mark.parametrize("adapter", ["lora", "bitfit"])
def test_fsdp_save_path_gathers_clean_weights_for_rank_zero(tiny_cfg, tmp_path, adapter,
                                                            fake_gpus, monkeypatch):
    """What train.py saves under FSDP: the module's full state dict gathered onto rank 0 (one
    unsharded gloo process here: FSDP itself needs an accelerator in torch 2.13), its model's
    part under the names an unwrapped model has (a checkpoint-wrapped block stands in for FSDP's
    wrappers, stripped alike), loaded strictly into a fresh twin and saved: the saved weights
    reload to the trained values. Saving `module.model` itself wrote the rank's shard."""
    cfg = check_config(tiny_cfg(f"adapter={adapter}"))
    net, twin, fresh = built(cfg), built(cfg), built(cfg)     # before CUDA is faked
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(1.0)                          # "trained": away from a fresh build
    encoder = (net.base_model.model if adapter == "lora" else net).bert.encoder
    encoder.layer[0] = checkpoint_wrapper(encoder.layer[0])
    module = models.TuneModule(net, cfg.task, cfg.optim, cfg.objective, num_labels=2)
    fake_gpus(1)
    trainer = L.Trainer(accelerator="gpu", devices=1, strategy=FSDPStrategy(), logger=False)
    trainer.strategy.connect(module)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with hardware.distributed_job():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
        whole = hardware.full_state_dict(trainer, "model")
    assert hardware.full_state_dict(L.Trainer(accelerator="gpu", logger=False), "model") is None
    monkeypatch.undo()                                         # CUDA is gone again
    assert whole is not None and not any("wrapped" in key for key in whole)
    twin.load_state_dict(whole)                  # strict: every name matches an unwrapped model
    adapters.save_weights(twin, tmp_path / "w")
    loaded = adapters.load_weights(fresh.base_model.model if adapter == "lora" else fresh,
                                   tmp_path / "w").state_dict()
    trained = [k for k, p in twin.named_parameters() if p.requires_grad]
    assert trained and all(torch.equal(loaded[key], whole[key]) for key in trained)


# ---- a profile the machine cannot run ---------------------------------------------------------
def test_gpu_profile_refused_before_any_run(tiny_cfg, tmp_path, client):
    with pytest.raises(ConfigError) as err:
        train(tiny_cfg("hardware=gpu"))
    assert err.value.key == "hardware" and "no" in err.value.allowed.lower()
    assert "hardware=cpu" in str(err.value)
    assert not (tmp_path / "cache").exists()                # no data was read
    assert train_runs(client) == []


def test_more_devices_than_the_machine_shows_refused(tiny_cfg, client, fake_gpus):
    fake_gpus(1)
    with pytest.raises(ConfigError) as err:
        train(tiny_cfg("hardware=multi-gpu", "hardware.devices=2"))
    assert err.value.key == "hardware.devices" and "at most 1" in str(err.value)
    assert "Fake GPU" in str(err.value)
    assert train_runs(client) == []


# ---- two gloo ranks started by torchrun ----------------------------------------------------------
@pytest.fixture(scope="module")
def gloo_job(tmp_path_factory):
    """tests/gloo_worker.py on two ranks that torchrun starts (as Slurm would): Lightning's
    launcher starts nothing, and the ranks meet only through the process group."""
    out = tmp_path_factory.mktemp("gloo")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.ckpt").write_bytes(b"a killed earlier run's state")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={port}", str(ROOT / "tests" / "gloo_worker.py"),
                           str(out)], cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    import json
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)], out


def test_ranks_take_rank_zeros_resume_decision(gloo_job):
    """Rank 1 asked first, while a new run's stale checkpoint was still on disk: it used to resume
    from it (or from nothing, once rank 0 had deleted it) on its own look at the folder."""
    ranks, out = gloo_job
    assert [r["new_run"] for r in ranks] == [None, None]
    assert all(r["stale_gone"] for r in ranks)
    assert [r["resumed"] for r in ranks] == [str(out / "checkpoints" / "last.ckpt")] * 2


def test_ranks_draw_their_own_dropout(gloo_job):
    ranks, _ = gloo_job
    assert ranks[0]["world"] == 2 and len(ranks[0]["draws"]) == len(ranks[1]["draws"]) == 2
    for step in range(2):
        assert ranks[0]["draws"][step] != ranks[1]["draws"][step]
    assert ranks[0]["draws"][0] != ranks[0]["draws"][1]


def test_eval_counts_every_row_once_over_ranks(gloo_job):
    """33 rows on 2 ranks: Lightning's DistributedSampler padded to 34, scoring one row twice."""
    ranks, _ = gloo_job
    from tests.gloo_worker import EVAL_ROWS
    assert [r["eval_rows"] for r in ranks] == [EVAL_ROWS, EVAL_ROWS]
