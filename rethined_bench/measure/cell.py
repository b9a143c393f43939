"""One cell (artifact × device × protocol), measured across fresh processes and summarised."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from exporters.base import Artifact

from .protocol import ProcessTiming, Protocol
from .stats import LatencyStats, summarize


class CellError(RuntimeError):
    """A cell could not be measured; the message is stored as the cell's reason."""


@dataclass
class CellMeasurement:
    latency: LatencyStats
    load_cold_ms: float
    load_warm_ms: float
    first_inference_ms: float
    peak_memory_mb: float
    capped: bool
    processes: list[ProcessTiming]

    def load_dict(self) -> dict[str, Any]:
        return {"cold": self.load_cold_ms, "warm": self.load_warm_ms,
                "cold_per_process": [p.load_cold_ms for p in self.processes],
                "warm_per_process": [p.load_warm_ms for p in self.processes]}


def run_worker(runner: str, runner_settings: dict[str, Any], artifact: Artifact, protocol: Protocol,
               timeout_s: float | None = None) -> ProcessTiming:
    """Measure in a fresh Python process (same interpreter, same environment)."""
    job = {"runner": runner, "runner_settings": runner_settings, "artifact": str(artifact.path),
           "protocol": protocol.to_dict()}
    timeout_s = timeout_s or (protocol.max_time_s * 3 + 600)
    try:
        done = subprocess.run([sys.executable, "-m", "rethined_bench.measure.worker"], input=json.dumps(job),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise CellError(f"worker timed out after {timeout_s:.0f} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CellError(f"worker exited with {done.returncode}: {tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise CellError(result["error"])
    return ProcessTiming(**result)


def measure_cell(runner: str, runner_settings: dict[str, Any], artifact: Artifact, protocol: Protocol,
                 on_process: Callable[[int], None] | None = None) -> CellMeasurement:
    """Run ``protocol.processes`` fresh workers one after another and summarise them."""
    timings = []
    for index in range(protocol.processes):
        timings.append(run_worker(runner, runner_settings, artifact, protocol))
        if on_process:
            on_process(index + 1)
    return CellMeasurement(
        latency=summarize([t.samples_ms for t in timings]),
        load_cold_ms=float(np.median([t.load_cold_ms for t in timings])),
        load_warm_ms=float(np.median([t.load_warm_ms for t in timings])),
        first_inference_ms=float(np.median([t.first_inference_ms for t in timings])),
        peak_memory_mb=max(t.inference_peak_delta_mb for t in timings),
        capped=any(t.capped for t in timings),
        processes=timings,
    )
