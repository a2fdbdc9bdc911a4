"""Cost figures: each is this run's own, over training steps only, and says what it was measured
on (peak source, energy source, the hardware as it resolved). Real fits of tiny-bert, read back
from a real MLflow store; the two-job test is a real multirun sharing one process."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from tests.conftest import TINY, run_cli, train_runs
from tests.test_adapters import BODY, _write_toy
from tests.test_hardware import fake_cpu_bf16
from tunelab import adapters, build, hardware, models
from tunelab.config import ConfigError, check_config
from tunelab.tracking import params as P
from tunelab.tracking.energy import EnergyMeter, rapl_zones
from tunelab.tracking.peaks import (device_model, matmul_dtype, peak_flops, probe_cache_file,
                                    probe_key, rated_gpu_peak)
from tunelab.tracking.perf import matmul_params, train_flops_per_token
from tunelab.train import train

MB = 2**20


def test_identical_jobs_of_one_multirun_record_the_same_peak_memory(tmp_path, client):
    """The basic launcher runs both jobs in one process, whose RSS grows job after job; each run's
    figure is its own: weights, gradients, optimizer state and what a step adds."""
    proc = run_cli(["tunelab-train", "-m", *TINY, "adapter=full", "trainer.max_steps=8",
                    "tracking.on_finished=rerun", "tracking.run_name=first,second"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = train_runs(client)
    assert len(runs) == 2 and runs[0].data.tags["tunelab.config_hash"] == \
        runs[1].data.tags["tunelab.config_hash"], "one config, run twice"
    first, second = (r.data.metrics["perf/peak_mem_mb"] for r in runs)
    assert first == pytest.approx(second, rel=0.05)
    weights_mb = runs[0].data.metrics["params/total"] * 4 / MB
    # full fine-tuning with AdamW holds weights + gradients + two moments, and a tiny step on top;
    # the process around it holds several hundred MB that are no run's own
    assert 4 * weights_mb <= first <= 4 * weights_mb + 64


class HeldGradients(L.Callback):
    """How many parameters hold a gradient as each step's update starts, and after each batch."""

    def __init__(self):
        self.updating: list[int] = []
        self.after_batch: list[int] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.updating.append(sum(p.grad is not None for p in pl_module.parameters()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after_batch.append(sum(p.grad is not None for p in pl_module.parameters()))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_step_frees_its_gradients_before_the_next_forward(tiny_cfg, one_thread, accumulate):
    """Lightning zeroes gradients inside the next step, after its forward, so that forward ran
    beside one more copy of the trainable weights; they are freed once the update has used them
    (and kept between the batches a step accumulates)."""
    cfg = check_config(tiny_cfg("adapter=full", f"trainer.accumulate_grad_batches={accumulate}",
                                "trainer.max_steps=2"))
    inputs = build.build_data(cfg)
    tokenizer = build.build_tokenizer(cfg)
    module = build.build_module(cfg, build.build_model(cfg, inputs.label_names, tokenizer), inputs,
                                tokenizer)
    held = HeldGradients()
    trainer = L.Trainer(**hardware.trainer_kwargs(cfg.hardware, cfg.trainer), logger=False,
                        enable_checkpointing=False, callbacks=[held], limit_val_batches=0)
    trainer.fit(module, build.build_datamodule(cfg, inputs, tokenizer, batch_size=8))
    trainable = sum(p.requires_grad for p in module.parameters())
    assert held.updating == [trainable, trainable]
    assert held.after_batch == ([trainable, 0] * 2 if accumulate == 2 else [0, 0])


def test_throughput_counts_training_steps_not_validation(tiny_cfg, client, one_thread):
    """Validating 960 rows every 2 steps takes most of the fit; samples/s (the wall clock between
    step ends, less validation) must not see it. Each
    config runs twice, interleaved, and the faster of each is compared: on a shared machine one
    run can be several times slower than the same run a minute later."""
    small = ["trainer.max_steps=16", "data.synthetic.eval_size=960", "trainer.log_every_n_steps=50",
             "tracking.on_finished=rerun"]
    for attempt in range(2):
        train(tiny_cfg(*small, "trainer.val_check_interval=2", "tracking.run_name=validating"))
        train(tiny_cfg(*small, "tracking.run_name=plain"))
    runs = {"validating": [], "plain": []}
    for run in train_runs(client):
        runs[run.info.run_name].append(run.data.metrics)
    measured = (16 - 3) * 32       # samples after the 3 warm-up batches
    for validating in runs["validating"]:
        assert validating["time/train_wall_seconds"] < 0.5 * validating["time/fit_seconds"], \
            "the validation-heavy run spent most of its fit validating"
        assert validating["perf/train_samples_per_sec"] * validating["time/train_wall_seconds"] \
            == pytest.approx(measured)
        # the wall clock holds the steps and what the loop does between them
        assert validating["time/train_step_seconds"] <= validating["time/train_wall_seconds"]
    best = {name: max(m["perf/train_samples_per_sec"] for m in found)
            for name, found in runs.items()}
    ratio = best["validating"] / best["plain"]
    assert 1 / 3 < ratio < 3, f"same steps, same rate (up to a loaded machine's noise): {ratio}"


def test_a_run_within_the_warm_up_records_no_training_clock(tiny_cfg, client, one_thread):
    """Three steps are all warm-up: no step was timed, so the run records no train time and no
    rate rather than a train time of 0 s that a table would read as free."""
    train(tiny_cfg("trainer.max_steps=3"))
    [run] = train_runs(client)
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and metrics["time/fit_seconds"] > 0
    assert not {"time/train_wall_seconds", "time/train_step_seconds",
                "perf/train_samples_per_sec", "perf/mfu"} & set(metrics)


def test_a_resumed_run_costs_every_attempt_up_to_its_checkpoint(tiny_cfg, client, monkeypatch,
                                                                  one_thread):
    """Crashed at step 5 after four slow steps (a checkpoint at step 4), then resumed to step 10:
    time, money and throughput count the first attempt's work up to that checkpoint too, so a
    run that needed two attempts does not look cheaper than one that needed one."""
    import time

    from tunelab.models import TuneModule

    overrides = ["trainer.max_steps=10", "trainer.checkpoint_every_n_steps=2",
                 "hardware.usd_per_hour=3.6"]
    step, slow = TuneModule.training_step, 1.0

    def slow_then_crash(self, batch, batch_idx):
        if self.trainer.global_step == 5:
            raise RuntimeError("the machine went away")
        time.sleep(slow)
        return step(self, batch, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(TuneModule, "training_step", slow_then_crash)
        with pytest.raises(RuntimeError, match="went away"):
            train(tiny_cfg(*overrides))
    train(tiny_cfg(*overrides))
    [run] = train_runs(client)
    metrics = run.data.metrics
    assert run.data.tags.get("tunelab.resumed") == "true"
    # each attempt times its batches after 3 warm-up ones: batch 4 of the first (the checkpoint
    # came after it), and the last 3 of the 6 batches the resumed attempt trained
    assert metrics["perf/train_samples_per_sec"] * metrics["time/train_wall_seconds"] == \
        pytest.approx((1 + 3) * 32)
    assert metrics["time/train_step_seconds"] >= slow, "the first attempt's timed slow step"
    assert metrics["time/fit_seconds"] >= 4 * slow, "four slow steps before the checkpoint"
    assert metrics["cost/usd"] == pytest.approx(3.6 * metrics["time/fit_seconds"] / 3600)


def _net(tiny_cfg, adapter: str) -> torch.nn.Module:
    cfg = check_config(tiny_cfg(f"adapter={adapter}"))
    tokenizer = models.load_tokenizer(cfg.model)
    net = models.load_model(cfg.model, cfg.task, ["neg", "pos"], tokenizer, cfg.seed)
    return adapters.apply_adapter(net, cfg.adapter, cfg.model, cfg.task)


def test_flops_are_counted_per_method(tiny_cfg):
    """Frozen weights do no weight-gradient work; head-only training does no backward through
    the body at all."""
    full, lora, head = (_net(tiny_cfg, a) for a in ("full", "lora", "head"))
    n, n_trainable = matmul_params(full)
    assert n == n_trainable and train_flops_per_token(full, "full") == 6 * n
    n_lora, lora_trainable = matmul_params(lora)
    assert 0 < lora_trainable < 0.1 * n_lora
    assert train_flops_per_token(lora, "lora") == 4 * n_lora + 2 * lora_trainable
    n_head, head_trainable = matmul_params(head)
    assert n_head == n and 0 < head_trainable < 0.1 * n
    assert train_flops_per_token(head, "head") == 2 * n + 4 * head_trainable
    embedding_weights = full.get_input_embeddings().weight.numel()
    assert n <= sum(p.numel() for p in full.parameters()) - embedding_weights, \
        "embedding lookups do no multiply-adds"


def test_gpu_peaks_are_rated_per_model_and_dtype():
    assert rated_gpu_peak("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert rated_gpu_peak("NVIDIA H100 80GB HBM3", "tf32") == 494e12
    assert rated_gpu_peak("NVIDIA H100 80GB HBM3", "fp32") == 67e12
    assert rated_gpu_peak("NVIDIA H100 PCIe", "bf16") == 756e12
    assert rated_gpu_peak("NVIDIA H200", "bf16") == 989e12
    assert rated_gpu_peak("NVIDIA A100-SXM4-80GB", "fp16") == 312e12
    assert rated_gpu_peak("NVIDIA A10G", "bf16") is None, "an A10G is not an A10"
    assert rated_gpu_peak("Tesla T4", "bf16") is None, "no bf16 tensor cores"
    assert (matmul_dtype("bf16-mixed"), matmul_dtype("16-mixed"), matmul_dtype("32-true")) == \
        ("bf16", "fp16", "fp32")
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")      # fp32 matmuls on TF32 tensor cores
    try:
        assert matmul_dtype("32-true") == "tf32"
    finally:
        torch.set_float32_matmul_precision(before)


def test_a_run_records_its_peak_money_energy_and_hardware(tiny_cfg, client, tmp_path,
                                                          monkeypatch):
    """MFU over the recorded peak (a CPU probe cached for this machine is reused, not re-taken),
    cost/usd from hardware.usd_per_hour, energy only where a counter exists, MLflow's system
    metrics when asked for, and the hardware, precision and batching as they resolved."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    cache = probe_cache_file()
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({probe_key("fp32"): 123e9}))
    train(tiny_cfg("trainer.max_steps=12", "hardware.usd_per_hour=3.6",
                   "tracking.system_metrics=true"))
    [run] = train_runs(client)
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    assert metrics["perf/peak_flops"] == 123e9
    assert tags["perf.peak_source"] == f"cpu-probe cached in {cache}"
    assert metrics["perf/mfu"] == pytest.approx(
        metrics["perf/flops_per_token"] * metrics["perf/train_tokens_per_sec"] / 123e9)
    assert metrics["cost/usd"] == pytest.approx(3.6 * metrics["time/fit_seconds"] / 3600)
    if rapl_zones():
        assert metrics["perf/energy_j"] > 0 and tags["perf.energy_source"].startswith("rapl")
    else:
        assert "perf/energy_j" not in metrics and "perf.energy_source" not in tags
    assert any(key.startswith("system/") for key in metrics), "system metrics were asked for"
    assert params["hardware.resolved.accelerator"] == "cpu"
    assert params["hardware.resolved.device_model"] == device_model("cpu")
    # the precision it trained in and how its batches were formed, beside its throughput
    assert params["hardware.resolved.precision"] == "32-true"
    assert (params["data.padding"], params["data.group_by_length"]) == ("longest", "False")


def test_a_default_run_on_a_cpu_with_bf16_trains_in_bf16(tiny_cfg, client, tmp_path, monkeypatch,
                                                         one_thread):
    """Where the CPU has bf16 instructions a run on the defaults trains under Lightning's bf16
    autocast, with fused AdamW and the default clipping (the AMP plugin once refused a fused
    optimizer at the first step, issue #21), learns, and records the precision it trained in;
    the peak its MFU divides by is the bf16 probe's, chosen from the live Trainer's precision."""
    fake_cpu_bf16(monkeypatch, avx512_bf16=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    probe_cache_file().parent.mkdir(parents=True)
    probe_cache_file().write_text(json.dumps({probe_key("fp32"): 1e9, probe_key("bf16"): 2e9}))
    # hardware=cpu's own precision (TINY pins fp32), as tests/test_hardware.py composes it
    cfg = tiny_cfg("hardware.precision=auto", "trainer.max_steps=30", "optim.lr=1e-2",
                   *BODY["tiny-bert"],
                   f"data.train_file={_write_toy(tmp_path, 256, 0)}",
                   f"data.validation_file={_write_toy(tmp_path, 64, 1)}")
    assert (cfg.hardware.name, cfg.trainer.gradient_clip_val) == ("cpu", 1.0)
    train(cfg)
    [run] = train_runs(client)
    params, metrics = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert (params["hardware.resolved.precision"], params["hardware.resolved.compute_dtype"]) \
        == ("bf16-mixed", "bfloat16")
    assert metrics["perf/peak_flops"] == 2e9
    assert metrics["val/acc"] >= 0.9, metrics      # colours vs animals: learned (1.0 measured)


def test_a_probe_under_load_is_used_but_never_cached(tmp_path, monkeypatch):
    """Whether this machine is quiet or busy, what is cached is only ever a quiet probe."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    probe_cache_file().parent.mkdir(parents=True)
    probe_cache_file().write_text("{half-written")      # a killed writer's leftovers: no cache
    value, source = peak_flops(torch.device("cpu"), "32-true")
    assert value > 1e8
    cached = source.startswith("cpu-probe cached")
    if cached:
        assert json.loads(probe_cache_file().read_text()) == {probe_key("fp32"): value}
        assert peak_flops(torch.device("cpu"), "32-true") == (value, source), "reused"
    else:
        assert "under" in source and probe_cache_file().read_text() == "{half-written"


def test_negative_price_is_refused(tiny_cfg):
    with pytest.raises(ConfigError, match=r"usd_per_hour=-1(\.0)?: null \(no cost/usd\) or a"):
        check_config(tiny_cfg("hardware.usd_per_hour=-1"))


def test_hardware_auto_on_a_cpu_hashes_like_hardware_cpu(tiny_cfg):
    def hash_of(*overrides: str) -> str:
        return P.config_hash(P.plain_config(check_config(tiny_cfg(*overrides))), "data")
    assert hash_of("hardware=auto") == hash_of("hardware=cpu")
    assert hash_of("hardware=cpu", "hardware.usd_per_hour=2") == hash_of("hardware=cpu")
    if not torch.cuda.is_available():
        assert hash_of("hardware=gpu") != hash_of("hardware=cpu"), "a GPU run is its own run"
    assert hash_of("hardware=cpu", "trainer.precision=bf16-mixed") != \
        hash_of("hardware=cpu", "trainer.precision=32-true")


def test_rapl_counters_are_read_per_package_across_a_wraparound(tmp_path):
    def zone(name: str, energy: int, max_range: int | None = 1000) -> None:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "energy_uj").write_text(f"{energy}\n")
        if max_range is not None:
            (folder / "max_energy_range_uj").write_text(f"{max_range}\n")
    zone("intel-rapl:0", 900)
    zone("intel-rapl:0:0", 100)          # the cores of package 0: part of it, not added again
    zone("intel-rapl:1", 10)
    zone("intel-rapl:2", 5, max_range=None)     # unreadable range: not a counter to use
    meter = EnergyMeter.start(torch.device("cpu"), first_on_node=True, root=tmp_path)
    assert [z.folder.name for z in meter.rapl] == ["intel-rapl:0", "intel-rapl:1"]
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("50\n")     # wrapped: 100 + 50
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("310\n")    # +300
    meter.sample()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("150\n")    # +100
    assert meter.joules() == pytest.approx((150 + 100 + 300) / 1e6)
    assert meter.source.startswith("rapl")
    assert EnergyMeter.start(torch.device("cpu"), first_on_node=False, root=tmp_path).source \
        is None, "other processes on the node leave the package counter to the first"


def test_a_run_shorter_than_the_log_interval_records_train_loss(tiny_cfg, client):
    train(tiny_cfg("trainer.max_steps=2", "trainer.log_every_n_steps=50"))
    [run] = train_runs(client)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [2]
