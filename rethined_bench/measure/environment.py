"""The environment recorded with every result: host, load, versions, rbench provenance."""

from __future__ import annotations

import os
import platform
from typing import Any

from .. import __version__
from ..provenance import git_sha, tool_versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def host_info() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def snapshot() -> dict[str, Any]:
    """Everything about this machine and toolchain that a number depends on (load average taken now)."""
    return {"host": host_info(), "versions": tool_versions(), "rbench": {"version": __version__, "git": git_sha()},
            "load_average_before": load_average()}
