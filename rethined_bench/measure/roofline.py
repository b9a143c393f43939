"""Roofline floor: ``max(FLOPs / peak compute, bytes / memory bandwidth)`` per cell and device.

Device ceilings come from the profile (with sources); a profile with ``measure_at_runtime`` takes them from its
runner instead (``Runner.runtime_ceilings``): for this host's CPU a large fp32 matmul and a large copy, cached per
host, since no datasheet knows this VM's effective numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .environment import host_info

if TYPE_CHECKING:
    from ..devices import DeviceProfile

CEILING_KEYS = {"fp32": "fp32_gflops", "fp16": "fp16_gflops", "int8": "int8_gops"}


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - begin)
    return best


def measure_host_ceilings(matmul_n: int = 4096, copy_mib: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """Peak fp32 GFLOP/s (torch matmul) and copy bandwidth GB/s (read + write) of this host, best of ``repeats``."""
    a, b = torch.randn(matmul_n, matmul_n), torch.randn(matmul_n, matmul_n)
    torch.mm(a, b)
    seconds = _best_of(lambda: torch.mm(a, b), repeats)
    gflops = 2 * matmul_n**3 / seconds / 1e9
    src = torch.empty(copy_mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = _best_of(lambda: dst.copy_(src), repeats)
    gbps = 2 * src.numel() * 4 / seconds / 1e9
    return {"fp32_gflops": round(gflops, 1), "mem_gbps": round(gbps, 2), "threads": torch.get_num_threads(),
            "method": f"torch.mm {matmul_n}^3 fp32 and a {copy_mib} MiB copy, best of {repeats}"}


def cached_ceilings(cache_dir: Path, key: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``'s ceilings, measured once per ``key`` (a processor and how it is driven) and kept in
    ``cache_dir/ceilings.json``: a peak does not change between sweeps, and measuring it takes seconds."""
    cache = cache_dir / "ceilings.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in cached:
        cached[key] = measure()
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(cached, indent=2) + "\n")
    return cached[key]


def host_ceilings(cache_dir: Path) -> dict[str, Any]:
    """Measured host ceilings, cached keyed by host (CPU model, cores, name)."""
    host = host_info()
    return cached_ceilings(cache_dir, f"{host['hostname']}|{host['cpu']}|{host['usable_cores']}",
                           measure_host_ceilings)


def device_ceilings(profile: "DeviceProfile", measure_now: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The profile's ceilings, with the values ``measure_now`` returns (the runner's measurement on the device)
    filled in when the profile asks for run-time measurement."""
    ceilings = dict(profile.ceilings)
    if ceilings.get("measure_at_runtime"):
        ceilings.update(measure_now())
    return ceilings


def roofline_floor_ms(gflops: float, bytes_moved: int, ceilings: dict[str, Any], precision: str) -> dict[str, Any]:
    """Floor in ms and which bound sets it; ``None`` fields when the device lacks a ceiling for this precision."""
    peak = ceilings.get(CEILING_KEYS.get(precision, "")) or ceilings.get("fp32_gflops")
    bandwidth = ceilings.get("mem_gbps")
    compute_ms = gflops / peak * 1e3 if peak else None
    memory_ms = bytes_moved / 1e9 / bandwidth * 1e3 if bandwidth else None
    bounds = {k: v for k, v in (("compute", compute_ms), ("memory", memory_ms)) if v is not None}
    if not bounds:
        return {"floor_ms": None, "bound": None, "compute_ms": None, "memory_ms": None}
    bound = max(bounds, key=bounds.get)
    return {"floor_ms": bounds[bound], "bound": bound, "compute_ms": compute_ms, "memory_ms": memory_ms}
