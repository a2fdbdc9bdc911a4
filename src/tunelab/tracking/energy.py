"""Energy from the counters the hardware keeps: NVML's total energy per GPU, RAPL's per CPU package.

Only a counter is recorded, never an estimate from a rated power: where no counter is readable the
run has no `perf/energy_j`. Both counters cover the whole device (a GPU shared with other processes,
every process on a CPU package), which the source tag says.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

POWERCAP = Path("/sys/class/powercap")


@dataclass
class RaplZone:
    """One top-level RAPL zone (a CPU package): a microjoule counter that wraps at `max_uj`."""
    folder: Path
    max_uj: int
    last_uj: int = 0
    total_uj: int = 0

    def read(self) -> int:
        return int((self.folder / "energy_uj").read_text())

    def start(self) -> None:
        self.last_uj, self.total_uj = self.read(), 0

    def sample(self) -> None:
        """Add the energy since the last sample; a smaller reading means the counter wrapped once
        (sampling every training step keeps it from wrapping twice between samples)."""
        now = self.read()
        self.total_uj += now - self.last_uj if now >= self.last_uj else \
            self.max_uj - self.last_uj + now
        self.last_uj = now


def rapl_zones(root: Path = POWERCAP) -> list[RaplZone]:
    """Readable package zones (`intel-rapl:N`, also the name AMD's driver uses); their subzones
    (`intel-rapl:N:M`, cores and dram) are parts of the package and are not added again."""
    zones = []
    for folder in sorted(root.glob("intel-rapl:*")):
        if folder.name.count(":") != 1:
            continue
        try:
            zone = RaplZone(folder, int((folder / "max_energy_range_uj").read_text()))
            zone.read()
        except (OSError, ValueError):
            continue        # energy_uj is root-only on most kernels since 2020
        zones.append(zone)
    return zones


class NvmlCounter:
    """The total energy counter (millijoules since the driver loaded) of one CUDA device."""

    def __init__(self, device: torch.device):
        self.nvml = importlib.import_module("pynvml")
        self.nvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        try:
            self.handle = self.nvml.nvmlDeviceGetHandleByUUID(uuid)
        except (TypeError, self.nvml.NVMLError):    # releases differ: str or bytes
            self.handle = self.nvml.nvmlDeviceGetHandleByUUID(uuid.encode())
        self.start_mj = self.read()

    def read(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def joules(self) -> float:
        return (self.read() - self.start_mj) / 1000


def nvml_counter(device: torch.device) -> NvmlCounter | None:
    """None without nvidia-ml-py, or on a GPU whose driver keeps no energy counter (pre-Volta)."""
    try:
        return NvmlCounter(device)
    except Exception:       # ImportError, NVMLError_*: no counter, so no figure
        return None


@dataclass
class EnergyMeter:
    """Energy over an interval from whichever counter this process can read. RAPL covers the whole
    machine, so only the first process on each node (`first_on_node`) reads it."""
    nvml: NvmlCounter | None = None
    rapl: list[RaplZone] = field(default_factory=list)

    @classmethod
    def start(cls, device: torch.device, first_on_node: bool,
              root: Path = POWERCAP) -> EnergyMeter:
        if device.type == "cuda":
            return cls(nvml=nvml_counter(device))
        zones = rapl_zones(root) if first_on_node else []
        for zone in zones:
            zone.start()
        return cls(rapl=zones)

    @property
    def source(self) -> str | None:
        if self.nvml is not None:
            return "nvml total energy counter, per GPU, summed over GPUs"
        if self.rapl:
            return f"rapl package counters ({', '.join(z.folder.name for z in self.rapl)}), " \
                   "whole CPU packages, summed over nodes"
        return None

    def sample(self) -> None:
        for zone in self.rapl:
            zone.sample()

    def joules(self) -> float | None:
        if self.nvml is not None:
            return self.nvml.joules()
        if self.rapl:
            self.sample()
            return sum(z.total_uj for z in self.rapl) / 1e6
        return None
