"""What a timing was measured on. Training times differ about 3x between the 2-core machines this
project runs on (AVX-512 or not, clock), so every recorded time carries its machine."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def describe(device: str | torch.device = "cpu") -> dict:
    """The CPU (model, widest vector unit, cores), torch's version and threads, and the GPU when ``device`` is one."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    simd = next((s for s in ("avx512f", "avx2", "avx", "sse4_2", "asimd") if s in flags), "")
    out = {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_simd": simd.replace("avx512f", "avx512"),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if info.get("cpu MHz"):
        out["cpu_mhz"] = round(float(info["cpu MHz"]))
    device = torch.device(device)
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out
