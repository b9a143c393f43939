"""Measurement on this host: each of the protocol's processes is a fresh Python worker that loads and times the
artifact itself (``python -m rethined_bench.runners.worker``), so every process pays its own cold load."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..measure.protocol import Protocol
from ..measure.record import Measurement, ProcessRecord

if TYPE_CHECKING:
    from .base import LocalRunner, Prepared

WORKER = "rethined_bench.runners.worker"


class CellError(RuntimeError):
    """A cell could not be measured; the message is stored as the cell's reason."""


def run_worker(runner: "LocalRunner", prepared: "Prepared", protocol: Protocol,
               timeout_s: float | None = None) -> tuple[ProcessRecord, dict[str, Any]]:
    """One fresh worker process (same interpreter and environment) that rebuilds ``runner`` from its class and
    settings and measures ``prepared``: its record and the runner's ``describe()``."""
    cls = type(runner)
    job = {"runner": f"{cls.__module__}:{cls.__qualname__}", "settings": asdict(runner.settings),
           "device": runner.device, "prepared": prepared.to_dict(), "protocol": protocol.to_dict()}
    timeout_s = timeout_s or (protocol.max_time_s * 3 + 600)
    try:
        done = subprocess.run([sys.executable, "-m", WORKER], input=json.dumps(job), capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise CellError(f"worker timed out after {timeout_s:.0f} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CellError(f"worker exited with {done.returncode}: {tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise CellError(result["error"])
    return ProcessRecord(**result["record"]), result["settings"]


def measure_in_processes(runner: "LocalRunner", prepared: "Prepared", protocol: Protocol) -> Measurement:
    """``protocol.processes`` fresh workers one after another, as one :class:`Measurement`."""
    records, described = [], {}
    for _ in range(protocol.processes):
        record, described = run_worker(runner, prepared, protocol)
        records.append(record)
    receipt = {"method": "fresh worker processes on this host, timed with time.perf_counter",
               "command": f"{sys.executable} -m {WORKER}", "runner": runner.name, "processes": protocol.processes}
    return Measurement(records, described | {"pid_isolation": "fresh process"}, receipt)
