"""The peak FLOP/s an MFU is divided by, and where it came from.

A GPU's peak is its rated dense (no sparsity) tensor throughput for the dtype the matmuls run in:
an fp32 run divided by a bf16 peak would read 15x too low. A CPU has no rated figure, so its peak
is a matmul probe in the run's dtype, taken once per machine while the machine is quiet and cached
on disk: a probe taken at fit end under load understated the peak (62 against ~215 GFLOP/s).
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

import psutil
import torch

TERA = 1e12
# Rated dense TFLOP/s per dtype (NVIDIA datasheets; tf32/bf16/fp16 are tensor-core figures without
# sparsity). The first pattern that matches the CUDA device name wins, so variants come first.
GPU_RATED_TFLOPS: list[tuple[str, dict[str, float]]] = [
    (r"H100.*PCIe", {"fp32": 51, "tf32": 378, "bf16": 756, "fp16": 756}),
    (r"H100 NVL|H200 NVL", {"fp32": 60, "tf32": 418, "bf16": 835, "fp16": 835}),
    (r"H100|H200|GH200", {"fp32": 67, "tf32": 494, "bf16": 989, "fp16": 989}),
    (r"A100", {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}),
    (r"L40S", {"fp32": 91.6, "tf32": 183, "bf16": 362, "fp16": 362}),
    (r"\bL40\b", {"fp32": 90.5, "tf32": 90.5, "bf16": 181, "fp16": 181}),
    (r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125, "fp16": 125}),
    (r"\bL4\b", {"fp32": 30.3, "tf32": 60, "bf16": 121, "fp16": 121}),
    (r"RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165, "fp16": 165}),
    (r"V100", {"fp32": 15.7, "fp16": 125}),
    (r"\bT4\b", {"fp32": 8.1, "fp16": 65}),
]
QUIET_CPU_PERCENT = 25.0    # other load on the machine above this: the probe is used, not cached


def matmul_dtype(precision: str) -> str:
    """The dtype a Lightning precision setting runs matmuls in: mixed precision multiplies in the
    half type; fp32 matmuls use TF32 tensor cores only when torch's matmul precision allows it."""
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    if precision.startswith("64"):
        return "fp64"
    return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def device_model(accelerator: str) -> str:
    """The model of the device that runs: the CUDA device name on a GPU, the CPU's brand string
    (from /proc/cpuinfo where there is one) on the CPU."""
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def rated_gpu_peak(name: str, dtype: str) -> float | None:
    for pattern, rates in GPU_RATED_TFLOPS:
        if re.search(pattern, name):
            return rates[dtype] * TERA if dtype in rates else None
    return None


def probe_cache_file() -> Path:
    """Per user and machine, not per project: the probe describes the machine."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "tunelab" / "cpu_peak_flops.json"


def probe_key(dtype: str) -> str:
    return (f"{device_model('cpu')}|cores={os.cpu_count()}|threads={torch.get_num_threads()}"
            f"|torch={torch.__version__}|{dtype}")


def matmul_probe(dtype: str, size: int = 1024, repeats: int = 6) -> float:
    """The fastest of several square matmuls in `dtype`: a moment of contention does not count."""
    kind = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}.get(
        dtype, torch.float32)
    a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
    a @ b
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - start)
    return 2 * size**3 / fastest


def other_load_percent() -> float:
    """CPU use of the whole machine over a short window, as a percentage of all cores."""
    return psutil.cpu_percent(interval=0.3)


def read_probes(cache: Path) -> dict[str, float]:
    """The cached probes; an unreadable or half-written file is no cache, not an error."""
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def cpu_peak(dtype: str) -> tuple[float, str]:
    """The cached probe for this machine, torch build, thread count and dtype; else a fresh probe,
    cached only when the machine was quiet (a busy probe would pin a low peak for good)."""
    cache, key = probe_cache_file(), probe_key(dtype)
    known = read_probes(cache)
    if key in known:
        return float(known[key]), f"cpu-probe cached in {cache}"
    load = other_load_percent()
    value = matmul_probe(dtype)
    if load > QUIET_CPU_PERCENT:
        return value, f"cpu-probe under {load:.0f}% load, not cached"
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**known, key: value}, indent=1))
    tmp.replace(cache)
    return value, f"cpu-probe cached in {cache}"


def peak_flops(device: torch.device, precision: str) -> tuple[float | None, str]:
    """Peak FLOP/s of one device for the run's matmul dtype, and its source (a tag)."""
    dtype = matmul_dtype(precision)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        value = rated_gpu_peak(name, dtype)
        source = f"rated {name} {dtype} dense" if value else f"no rated {dtype} peak for {name}"
        return value, source
    return cpu_peak(dtype)
