"""The timing protocol, runner-neutral: load (cold), first inference, warm-up, timed iterations, warm reload.

Timed iterations run until both ``min_iters`` and ``min_time_s`` are reached, but stop at ``max_time_s`` so a
20 s/iteration cell still finishes (the cell then records ``capped``). A cell repeats this in ``processes`` fresh
processes: the unit of replication (measurement.md §3).
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inputs import inputs_for
from . import memory
from .record import ProcessRecord

if TYPE_CHECKING:  # the interface only: measure/ imports no runner
    from ..runners.base import LocalRunner, Prepared


@dataclass(frozen=True)
class Protocol:
    """Defaults fit a 2-core host: 3 processes × (1 warm-up + ≥5 iterations and ≥1 s), capped at 30 s each."""

    processes: int = 3
    warmup: int = 1
    min_iters: int = 5
    min_time_s: float = 1.0
    max_time_s: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.processes < 1 or self.min_iters < 1 or self.warmup < 0:
            raise ValueError("processes and min_iters must be >= 1, warmup >= 0")
        if self.max_time_s <= 0 or self.min_time_s < 0:
            raise ValueError("max_time_s must be > 0 and min_time_s >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def key(self) -> str:
        """Stable short hash: results are resumed only under the same protocol."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def timed_iterations(run: Any, protocol: Protocol) -> tuple[list[float], bool]:
    """Call ``run()`` until min_iters and min_time are both met or max_time is reached; returns (ms, capped)."""
    samples: list[float] = []
    started = time.perf_counter()
    while True:
        begin = time.perf_counter()
        run()
        end = time.perf_counter()
        samples.append((end - begin) * 1e3)
        elapsed = end - started
        if len(samples) >= protocol.min_iters and elapsed >= protocol.min_time_s:
            return samples, False
        if elapsed >= protocol.max_time_s:
            return samples, len(samples) < protocol.min_iters or elapsed < protocol.min_time_s


def measure_process(runner: "LocalRunner", prepared: "Prepared", protocol: Protocol) -> ProcessRecord:
    """One process's share of a cell: cold load, first inference, warm-up, timed loop, then a warm reload.

    Memory is the peak RSS during inference above the loaded model's RSS: the inference's own working set
    (:mod:`.memory` says how each OS measures it).
    """
    inputs = inputs_for(prepared.artifact.manifest, seed=protocol.seed)
    gc.collect()
    begin = time.perf_counter()
    loaded = runner.load(prepared)
    load_cold = (time.perf_counter() - begin) * 1e3
    rss_after_load = memory.rss_mb()
    memory.reset_peak()

    begin = time.perf_counter()
    output = loaded.infer(inputs)
    first = (time.perf_counter() - begin) * 1e3
    _check_finite(output)
    for _ in range(protocol.warmup):
        loaded.infer(inputs)
    samples, capped = timed_iterations(lambda: loaded.infer(inputs), protocol)
    peak = memory.peak_mb()

    del loaded
    gc.collect()
    begin = time.perf_counter()
    runner.load(prepared)
    load_warm = (time.perf_counter() - begin) * 1e3
    return ProcessRecord(samples, load_cold, load_warm, first, max(peak - rss_after_load, 0.0), capped)


def _check_finite(output: Any) -> None:
    arrays = output if isinstance(output, (list, tuple)) else [output]
    for array in arrays:
        if not np.all(np.isfinite(np.asarray(array))):
            raise RuntimeError("the artifact produced non-finite outputs (NaN or inf)")
