"""The checks of bench/gpu_check.sh, each a PASS / FAILED / SKIP row; exits 1 on any FAILED.

    python bench/gpu/check.py OUT [--cpu-dry-run]

Every run is a real `python -m tunelab.train` on tiny random-init models (configs in conf/model,
the tokenizer shipped in bench/gpu/tokenizer), into one MLflow store under OUT:

1. the device and a measured bf16 matmul peak (CUDA-event timed);
2. precision x clipping x adapter: one sweep in ONE process over bf16-mixed / 16-mixed, clip 1.0 /
   none, full / LoRA, with the GPU memory at each job's start (it must be back to zero);
3. hardware=fsdp and hardware=multi-gpu at one device, full and LoRA, on a decoder;
4. resume after SIGKILL: one MLflow run, FINISHED, every step recorded once;
5. cost figures against independent measurements: samples/s against CUDA-event step times, peak
   memory against torch.cuda.max_memory_reserved, MFU against the measured matmul peak.

`--cpu-dry-run` runs the same script on the CPU (hardware=cpu, gloo for multi-gpu, wall-clock
timers), to show it works end to end where no GPU is lent; FSDP and CUDA-only rows SKIP there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = "gpu_check.md"


class Rows:
    def __init__(self, out: Path):
        self.out, self.rows = out, []

    def add(self, check: str, ok: bool | None, detail: str) -> None:
        status = "SKIP" if ok is None else ("PASS" if ok else "FAILED")
        self.rows.append((check, status, detail))
        print(f"{status:6} {check}: {detail}", flush=True)

    def finish(self, header: str) -> int:
        table = "\n".join(f"| {c} | {s} | {d} |" for c, s, d in self.rows)
        text = f"{header}\n\n| check | result | figures |\n| --- | --- | --- |\n{table}\n"
        (self.out / RESULTS).write_text(text)
        failed = [c for c, s, _ in self.rows if s == "FAILED"]
        print(f"\n{text}\ngpu_check: {len(failed)} FAILED" + (f": {failed}" if failed else ""))
        return 1 if failed else 0


class Tunelab:
    """`python -m tunelab.train` on tiny models into OUT's store; a log per call."""

    def __init__(self, out: Path, gpu: bool):
        self.out, self.gpu = out, gpu
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(HERE), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "GPU_CHECK_MEMORY": str(out / "job_memory.jsonl"),
            "GPU_CHECK_TIMING": str(out / "timing.json")}
        self.client = MlflowClient(f"sqlite:///{out / 'mlruns' / 'mlflow.db'}")

    def overrides(self, experiment: str) -> list[str]:
        return [f"model.tokenizer={HERE / 'tokenizer'}", "trainer.enable_progress_bar=false",
                "trainer.max_epochs=null", "data.synthetic.train_size=512",
                "data.synthetic.eval_size=64", "data.batch_size=16", "data.max_length=64",
                f"tracking.experiment={experiment}",
                f"tracking.uri=sqlite:///{self.out / 'mlruns' / 'mlflow.db'}",
                f"paths.mlruns_dir={self.out / 'mlruns'}", f"paths.cache_dir={self.out / 'cache'}",
                f"paths.checkpoint_dir={self.out / 'checkpoints' / experiment}",
                f"hydra.run.dir={self.out / 'hydra' / experiment}",
                f"hydra.sweep.dir={self.out / 'hydra' / experiment}"]

    def command(self, experiment: str, args: list[str], script: str | None = None) -> list[str]:
        entry = [str(HERE / script)] if script else ["-m", "tunelab.train"]
        return [sys.executable, *entry, *args, *self.overrides(experiment)]

    def run(self, experiment: str, args: list[str], script: str | None = None,
            timeout: int = 400) -> subprocess.CompletedProcess:
        log = self.out / "logs" / f"{experiment}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            return subprocess.run(self.command(experiment, args, script), cwd=self.out,
                                  env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)

    def runs(self, experiment: str) -> list:
        exp = self.client.get_experiment_by_name(experiment)
        return [] if exp is None else self.client.search_runs(
            [exp.experiment_id], "tags.`tunelab.run_kind` = 'train'")

    def hardware(self, name: str) -> list[str]:
        """On the CPU dry run the GPU profiles run on the CPU (multi-gpu over gloo)."""
        if self.gpu:
            return [f"hardware={name}"]
        return [f"hardware={name}", "hardware.accelerator=cpu"] + \
            (["hardware.process_group_backend=gloo"] if name != "gpu" else [])


def device_row(rows: Rows, gpu: bool) -> float:
    """The measured dense matmul peak in FLOP/s (bf16 on a GPU, fp32 on the CPU dry run)."""
    n, dtype = (8192, torch.bfloat16) if gpu else (1024, torch.float32)
    device = "cuda" if gpu else "cpu"
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    reps = 20 if gpu else 5
    if gpu:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        begin = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = time.perf_counter() - begin
    peak = 2 * n**3 * reps / seconds
    name = torch.cuda.get_device_name(0) if gpu else "CPU (dry run)"
    native = torch.cuda.is_bf16_supported(including_emulation=False) if gpu else None
    rows.add("device", True, f"{name}, {torch.cuda.device_count() if gpu else 0} GPU(s), "
                             f"native bf16={native}, torch {torch.__version__}")
    rows.add("matmul peak", peak > 0, f"{peak / 1e12:.2f} TFLOP/s {str(dtype).split('.')[-1]} "
                                      f"({n}x{n}, {reps} reps)")
    return peak


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def matrix_rows(rows: Rows, tl: Tunelab, steps: int) -> None:
    experiment = "matrix"
    proc = tl.run(experiment, ["-m", *tl.hardware("gpu"), "model=tiny-bert",
                               "hardware.precision=bf16-mixed,16-mixed", "adapter=full,lora",
                               "trainer.gradient_clip_val=1.0,null", f"trainer.max_steps={steps}",
                               f"trainer.val_check_interval={steps}",
                               "+hydra.callbacks.job_memory._target_=probes.JobMemory"])
    runs = {(r.data.params["hardware.resolved.precision"], r.data.params["adapter.name"],
             r.data.params["trainer.gradient_clip_val"]): r for r in tl.runs(experiment)}
    rows.add("sweep exit", proc.returncode == 0, f"8 jobs in one process, rc={proc.returncode}")
    for precision in ("bf16-mixed", "16-mixed"):
        for clip in ("1.0", "None"):
            for adapter in ("full", "lora"):
                run = runs.get((precision, adapter, clip))
                name = f"{precision} clip={clip} {adapter}"
                if run is None:
                    rows.add(name, False, "no run recorded (see logs/matrix.log)")
                    continue
                m = run.data.metrics
                ok = run.info.status == "FINISHED" and finite(m.get("val/loss")) and \
                    run.data.params.get("hardware.resolved.compute_dtype") == \
                    ("bfloat16" if precision == "bf16-mixed" else "float16")
                rows.add(name, ok, f"{run.info.status}, train/loss {m.get('train/loss', 'nan'):.3f}"
                                   f", val/loss {m.get('val/loss', float('nan')):.3f}")
    memory = [json.loads(line) for line in (tl.out / "job_memory.jsonl").read_text().splitlines()]
    starts = [r["allocated_mb"] for r in memory if r["moment"] == "start"]
    if not tl.gpu:
        rows.add("GPU memory between jobs", None, f"no CUDA allocator ({len(starts)} jobs seen)")
        return
    ends = [r["reserved_mb"] for r in memory if r["moment"] == "end"]
    rows.add("GPU memory between jobs", len(starts) == 8 and max(starts) < 1.0,
             f"allocated at each job's start (MB): {[round(s, 1) for s in starts]}; "
             f"reserved at each end: {[round(e) for e in ends]}")


def sharded_rows(rows: Rows, tl: Tunelab, steps: int) -> None:
    experiment = "sharded"
    profiles = "fsdp,multi-gpu" if tl.gpu else "multi-gpu"
    hw = ([f"hardware={profiles}"] if tl.gpu else
          [f"hardware={profiles}", "hardware.accelerator=cpu", "hardware.process_group_backend=gloo"])
    proc = tl.run(experiment, ["-m", *hw, "hardware.devices=1", "model=tiny-llama",
                               "adapter=full,lora", f"trainer.max_steps={steps}",
                               f"trainer.val_check_interval={steps}"])
    rows.add("fsdp/multi-gpu sweep exit", proc.returncode == 0, f"rc={proc.returncode}")
    runs = {(r.data.params["hardware.name"], r.data.params["adapter.name"]): r
            for r in tl.runs(experiment)}
    for name in ("fsdp", "multi-gpu"):
        for adapter in ("full", "lora"):
            check = f"{name} devices=1 {adapter} (tiny-llama)"
            if name == "fsdp" and not tl.gpu:
                rows.add(check, None, "FSDP needs an accelerator in torch 2.13")
                continue
            run = runs.get((name, adapter))
            if run is None:
                rows.add(check, False, "no run recorded (see logs/sharded.log)")
                continue
            m, p = run.data.metrics, run.data.params
            weights = tl.client.list_artifacts(run.info.run_id, "weights")
            ok = run.info.status == "FINISHED" and finite(m.get("val/loss")) and bool(weights) \
                and m.get("params/adapter_mb", 0) > 0
            rows.add(check, ok, f"{run.info.status}, val/loss {m.get('val/loss', float('nan')):.3f}"
                                f", weights {m.get('params/adapter_mb', 0):.2f} MB, dtypes "
                                f"{p.get('hardware.resolved.weights_dtype')}/"
                                f"{p.get('hardware.resolved.compute_dtype')}/"
                                f"{p.get('hardware.resolved.reduce_dtype')}")


def resume_rows(rows: Rows, tl: Tunelab, steps: int) -> None:
    """Kill -9 once a checkpoint exists, run the same command again, read the one run back."""
    experiment = "resume"
    args = [*tl.hardware("gpu"), "model=tiny-bert", "adapter=lora", f"trainer.max_steps={steps}",
            "trainer.checkpoint_every_n_steps=10", "trainer.log_every_n_steps=1",
            f"trainer.val_check_interval={steps}"]
    log = (tl.out / "logs" / f"{experiment}.log").open("a")
    first = subprocess.Popen(tl.command(experiment, args), cwd=tl.out, env=tl.env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while first.poll() is None and time.monotonic() < deadline and \
            not list((tl.out / "checkpoints" / experiment).glob("*/last.ckpt")):
        time.sleep(0.05)
    killed = first.poll() is None
    if killed:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    if not killed:
        rows.add("resume after SIGKILL", False, f"the run ended (rc={first.returncode}) before a "
                                                "checkpoint appeared; see logs/resume.log")
        return
    again = tl.run(experiment, args)
    runs = tl.runs(experiment)
    if again.returncode != 0 or len(runs) != 1:
        rows.add("resume after SIGKILL", False, f"rerun rc={again.returncode}, {len(runs)} runs")
        return
    run = runs[0]
    history = tl.client.get_metric_history(run.info.run_id, "train/loss")
    recorded = sorted(m.step for m in history)
    ok = run.info.status == "FINISHED" and run.data.tags.get("tunelab.resumed") == "true" and \
        recorded == sorted(set(recorded)) and recorded[-1] == steps
    rows.add("resume after SIGKILL", ok, f"{run.info.status}, resumed={run.data.tags.get('tunelab.resumed')}"
                                         f", {len(recorded)} train/loss steps once each, last "
                                         f"{recorded[-1] if recorded else None} of {steps}")


def cost_rows(rows: Rows, tl: Tunelab, steps: int, peak: float) -> None:
    """A 4-layer, 512-wide random-init BERT, every row padded to 128 tokens."""
    experiment = "cost"
    width = ["++model.config.hidden_size=512", "++model.config.num_hidden_layers=4",
             "++model.config.num_attention_heads=8", "++model.config.intermediate_size=2048"] \
        if tl.gpu else []
    proc = tl.run(experiment, [*tl.hardware("gpu"), "model=tiny-bert", "adapter=full",
                               *width, "data.max_length=128", "data.padding=max_length",
                               "data.batch_size=64", f"trainer.max_steps={steps}",
                               f"trainer.val_check_interval={steps}"], script="timed_train.py")
    runs = tl.runs(experiment)
    if proc.returncode != 0 or not runs:
        rows.add("cost run", False, f"rc={proc.returncode}; see logs/cost.log")
        return
    m = runs[0].data.metrics
    timing = json.loads((tl.out / "timing.json").read_text())
    ratio = m["perf/train_samples_per_sec"] / timing["samples_per_sec"]
    clock = "CUDA events" if tl.gpu else "wall clock"
    rows.add("samples/s vs step timing", 0.7 <= ratio <= 1.1,
             f"tunelab {m['perf/train_samples_per_sec']:.0f}, {clock} in-step "
             f"{timing['samples_per_sec']:.0f} over {timing['steps']} steps (ratio {ratio:.2f})")
    if tl.gpu:
        reserved, allocated = timing["max_memory_reserved_mb"], timing["max_memory_allocated_mb"]
        rows.add("peak memory vs allocator", 0 < m["perf/peak_mem_mb"] <= reserved * 1.02,
                 f"tunelab perf/peak_mem_mb {m['perf/peak_mem_mb']:.0f}, max_memory_allocated "
                 f"{allocated:.0f}, max_memory_reserved {reserved:.0f}")
    else:
        rows.add("peak memory vs allocator", None, f"no CUDA allocator (tunelab "
                                                   f"{m.get('perf/peak_mem_mb', float('nan')):.0f} MB)")
    if "perf/mfu" not in m or "perf/peak_flops" not in m:
        rows.add("MFU vs measured peak", None if not tl.gpu else False,
                 "no perf/mfu recorded (no known peak for this device)")
        return
    achieved = m["perf/mfu"] * m["perf/peak_flops"]
    measured_mfu = achieved / peak
    rows.add("MFU vs measured peak", 0 < measured_mfu <= 1,
             f"tunelab perf/mfu {m['perf/mfu']:.3g} of {m['perf/peak_flops'] / 1e12:.3g} TFLOP/s; "
             f"{measured_mfu:.3g} of the measured {peak / 1e12:.3g} TFLOP/s "
             f"(peaks {m['perf/peak_flops'] / peak:.2f}x apart)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--cpu-dry-run", action="store_true")
    args = p.parse_args()
    gpu = not args.cpu_dry_run
    if gpu and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible (use --cpu-dry-run to test the script)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows, tl = Rows(out), Tunelab(out, gpu)
    began = time.monotonic()
    peak = device_row(rows, gpu)
    matrix_rows(rows, tl, steps=30 if gpu else 6)
    sharded_rows(rows, tl, steps=30 if gpu else 6)
    resume_rows(rows, tl, steps=1500 if gpu else 120)
    cost_rows(rows, tl, steps=60 if gpu else 12, peak=peak)
    mode = "GPU" if gpu else "CPU dry run"
    return rows.finish(f"## bench/gpu_check.sh ({mode}, {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
