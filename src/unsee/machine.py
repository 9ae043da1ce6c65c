"""What a timing was measured on. Training times differ about 3x between the 2-core machines this
project runs on (AVX-512 or not, clock), so every recorded time carries its machine."""

from __future__ import annotations

import ctypes
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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Let glibc's allocator serve allocations below ``limit`` bytes from memory the process keeps, instead of
    mapping fresh pages for each large tensor and giving them back when it is freed. Returns whether it applied
    (glibc only; elsewhere nothing changes).

    Why: a small model's activations are a few MB each, above glibc's default mapping threshold, so every UNet call
    maps, faults in and unmaps its activations again. With :class:`unsee.models.SplitGEGLU` as well, the mini's UNet
    ran at 12.4 ms a row against 13.7 with neither (24 rows, one thread; benchmarks/results/unet_batch.md). The
    price: the process keeps its peak memory until it exits. The CLI sets it for its own process; a library never should
    (it is the process's allocator, not unsee's).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    # The process's own symbols: glibc is loaded already (find_library would spawn ldconfig at every start-up).
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(k, v) == 1 for k, v in ((_M_MMAP_THRESHOLD, limit), (_M_TRIM_THRESHOLD, limit),
                                                    (_M_TOP_PAD, 64 << 20)))  # fmt: skip
