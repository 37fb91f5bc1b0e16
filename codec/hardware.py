"""The machine the codec runs on (`detect`) and the precision models run fastest in there
(`fast_dtype`).

`detect` names the machine: CPU model, torch's capability string, native bfloat16 and AMX,
cores; or the GPU. bfloat16 is fast only where the CPU has native bfloat16 kernels (AVX-512
BF16 or AMX): elsewhere it is emulated and many times slower than float32. What `auto` effort
means on the machine is measured, not assumed: see `codec.plan`.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import torch


@dataclass(frozen=True)
class Machine:
    """What a speed figure depends on: the device and, for a CPU, its class."""

    device: str
    name: str
    capability: str
    native_bf16: bool
    amx: bool
    cores: int
    torch: str

    def describe(self) -> str:
        """One line for logs, `/healthz` and benchmark headers."""
        if self.device != "cpu":
            return f"{self.device} {self.name}, torch {self.torch}"
        bf16 = "native bf16" if self.native_bf16 else "no native bf16"
        amx = ", AMX" if self.amx else ""
        cpu = f"{self.name} ({self.capability}, {bf16}{amx}), {self.cores} cores"
        return f"{cpu}, torch {self.torch}"

    def as_dict(self) -> dict[str, str | bool | int]:
        """The fields, for JSON and CSV."""
        return asdict(self)


def detect(device: torch.device | str = "cpu") -> Machine:
    """The machine behind `device` (a CPU: model name, capability, bf16/AMX, threads)."""
    device = torch.device(device)
    capability = torch.backends.cpu.get_cpu_capability()
    name = _cpu_name()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple GPU"
    return Machine(
        device=device.type,
        name=name,
        capability=capability,
        native_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        amx=bool(torch.cpu._is_amx_tile_supported()),
        cores=torch.get_num_threads(),
        torch=torch.__version__,
    )


@cache
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def fast_dtype(machine: Machine, model_dtype: torch.dtype) -> torch.dtype:
    """The fastest precision to run a model in: bfloat16 for a float32 model on a CPU with
    native bfloat16 kernels (a 1024×576 TAESD decode 1.04 s against 2.27 s on the 2-core
    AVX-512 EPYC, its pixels 55 dB from float32's), else the model's own (CUDA models are
    float16 already; emulated bfloat16 is many times slower)."""
    if machine.device == "cpu" and model_dtype == torch.float32 and machine.native_bf16:
        return torch.bfloat16
    return model_dtype
