"""What a runner's ``measure`` returns, whoever timed it: this host's worker processes, trtexec, an AI Hub job.

The unit of replication is one fresh process (or one fresh session on the device): :class:`ProcessRecord` holds
its timed samples and what it could observe of load, first inference and memory. Device tools report only some of
these, so every field but the samples is optional; the statistics over all processes are computed here, the same
way for every backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .stats import LatencyStats, summarize


@dataclass
class ProcessRecord:
    """One fresh process's share of a cell (times in ms, memory in MiB)."""

    samples_ms: list[float]
    load_cold_ms: float | None = None
    load_warm_ms: float | None = None
    first_inference_ms: float | None = None
    peak_memory_mb: float | None = None
    capped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Measurement:
    """A cell measured: per-process records, what the numbers include (``settings``), the ``receipt`` that says
    how they were obtained (command lines or job ids, tool versions), and what the device reported besides
    (``extra``: thermal state, op placement), all stored with the result."""

    processes: list[ProcessRecord]
    settings: dict[str, Any]
    receipt: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    unstable_reasons: list[str] = field(default_factory=list)  # what the device showed (a clock drop, throttling)

    def __post_init__(self) -> None:
        if not self.processes or not any(p.samples_ms for p in self.processes):
            raise ValueError("a measurement needs at least one process with timed samples")

    @property
    def latency(self) -> LatencyStats:
        """Statistics over every process's samples; also unstable when the device reported a reason to be."""
        stats = summarize([p.samples_ms for p in self.processes])
        if not self.unstable_reasons:
            return stats
        return replace(stats, unstable=True, reasons=stats.reasons + self.unstable_reasons)

    @property
    def capped(self) -> bool:
        return any(p.capped for p in self.processes)

    @property
    def first_inference_ms(self) -> float | None:
        return _median(p.first_inference_ms for p in self.processes)

    @property
    def peak_memory_mb(self) -> float | None:
        values = [p.peak_memory_mb for p in self.processes if p.peak_memory_mb is not None]
        return max(values) if values else None

    def load_dict(self) -> dict[str, Any] | None:
        """Median cold and warm load over processes, and every process's values; ``None`` if none was observed."""
        cold = [p.load_cold_ms for p in self.processes]
        warm = [p.load_warm_ms for p in self.processes]
        if all(v is None for v in cold + warm):
            return None
        return {"cold": _median(cold), "warm": _median(warm), "cold_per_process": cold, "warm_per_process": warm}


def _median(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None
