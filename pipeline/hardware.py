"""What this machine can train on: device, GPUs (name, total and free memory), bf16, CUDA version, CPU cores, RAM."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GpuInfo:
    """One CUDA device; memory in bytes."""

    name: str
    total: int
    free: int


@dataclass
class Hardware:
    """The training hardware as seen from this process (memory in bytes)."""

    device: str  # "cuda" | "mps" | "cpu"
    gpus: list[GpuInfo] = field(default_factory=list)
    bf16: bool = False  # fast bf16 mixed precision (a CUDA GPU of compute capability >= 8.0)
    cuda_version: str | None = None
    cpu_cores: int = 1
    ram: int = 0

    @property
    def gpu_memory(self) -> int:
        """Memory of the smallest GPU (every rank must fit), 0 without a GPU."""
        return min((gpu.total for gpu in self.gpus), default=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for logs and the UI."""
        if not self.gpus:
            return f"{self.device}: {self.cpu_cores} CPU cores, {self.ram / 2**30:.1f} GiB RAM"
        names = ", ".join(f"{g.name} ({g.total / 2**30:.1f} GiB, {g.free / 2**30:.1f} free)" for g in self.gpus)
        return f"cuda {self.cuda_version}: {names}; bf16={'yes' if self.bf16 else 'no'}; {self.cpu_cores} CPU cores"


def _ram_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil missing or a sandbox without /proc
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def detect_hardware() -> Hardware:
    """Probe torch for CUDA/MPS devices; never fails (a broken driver reads as CPU only)."""
    import torch

    hw = Hardware(device="cpu", cpu_cores=_cpu_cores(), ram=_ram_bytes())
    try:
        if torch.cuda.is_available():
            hw.device = "cuda"
            hw.cuda_version = torch.version.cuda
            for index in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(index)
                hw.gpus.append(GpuInfo(torch.cuda.get_device_name(index), int(total), int(free)))
            hw.bf16 = bool(torch.cuda.is_bf16_supported())
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            hw.device = "mps"
    except RuntimeError:  # driver present but unusable
        hw.device, hw.gpus = "cpu", []
    return hw
