"""A sweep: every selected (model, variant, resolution) cell on one device, exported, measured and stored.

Cells are stored as they finish (a transaction each), so an interrupted sweep loses nothing; a re-run skips cells
already stored with status ``ok`` for the same device, artifact sha256 and protocol. A cell that cannot be
exported or measured is stored as ``failed`` (or ``unsupported``) with its reason, and the sweep continues.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from exporters import ExportRequest, export, get_exporter
from exporters.base import Artifact

from .devices import DeviceProfile
from .errors import ParityError, RbenchError, UnsupportedExportError, UnsupportedResolutionError
from .measure.cell import CellError, measure_cell
from .measure.environment import load_average, snapshot
from .measure.protocol import Protocol
from .measure.roofline import device_ceilings, roofline_floor_ms
from .runners import get_runner
from .store import Result, ResultStore


@dataclass(frozen=True)
class Cell:
    model: str
    variant: str
    resolution: int

    @property
    def label(self) -> str:
        return f"{self.model}/{self.variant} @{self.resolution}"


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # "ok", "failed", "unsupported", "skipped"
    detail: str = ""
    result: Result | None = None


def runner_settings(profile: DeviceProfile) -> dict[str, Any]:
    """Runner options the profile fixes (e.g. ORT threads and graph optimisation level)."""
    keys = {"local-ort": ("threads", "graph_opt_level"), "local-coreml": ("compute_units",)}.get(profile.runner, ())
    return {k: profile.toolchain[k] for k in keys if k in profile.toolchain}


def export_options(profile: DeviceProfile) -> dict[str, Any]:
    """Exporter options the profile fixes (ONNX opset; Core ML deployment target and compute units)."""
    mapping = {"onnx_opset": "opset", "coreml_deployment_target": "deployment_target",
               "compute_units": "compute_units"}
    return {option: profile.toolchain[key] for key, option in mapping.items() if key in profile.toolchain}


class Sweep:
    def __init__(self, profile: DeviceProfile, store: ResultStore, protocol: Protocol, artifacts_dir: Path,
                 *, force: bool = False, weights: dict[str, str] | None = None) -> None:
        self.profile, self.store, self.protocol = profile, store, protocol
        self.artifacts_dir, self.force, self.weights = artifacts_dir, force, weights or {}
        self.runner = get_runner(profile.runner, **runner_settings(profile))
        self.exporter = get_exporter(profile.target)
        self.ceilings = device_ceilings(profile, store.path.parent)

    def check_runner(self) -> None:
        availability = self.runner.availability()
        if not availability.ok:
            fix = f"; {availability.fix}" if availability.fix else ""
            raise RbenchError(f"device {self.profile.name} is not reachable here: {availability.reason}{fix}")

    def run(self, cells: list[Cell], progress: Callable[[CellOutcome], None] | None = None) -> list[CellOutcome]:
        self.check_runner()
        outcomes = []
        for cell in cells:
            outcome = self.run_cell(cell)
            outcomes.append(outcome)
            if progress:
                progress(outcome)
        return outcomes

    def _base(self, cell: Cell, status: str, reason: str | None = None, **fields: Any) -> Result:
        return Result(device=self.profile.name, runner=self.profile.runner, model=cell.model, variant=cell.variant,
                      height=cell.resolution, width=cell.resolution, target=self.profile.target,
                      precision=self.profile.precision, status=status, reason=reason,
                      protocol_key=self.protocol.key, protocol=self.protocol.to_dict(), **fields)

    def _store_failure(self, cell: Cell, status: str, reason: str, artifact: Artifact | None = None) -> CellOutcome:
        extra = {"artifact": artifact.path.name, "artifact_sha256": artifact.sha256,
                 "work": artifact.manifest.get("work")} if artifact else {}
        result = self._base(cell, status, reason, environment=snapshot(), **extra)
        self.store.add(result)
        return CellOutcome(cell, status, reason, result)

    def run_cell(self, cell: Cell) -> CellOutcome:
        request = ExportRequest(cell.model, cell.resolution, cell.resolution, self.profile.target,
                                variant=cell.variant, precision=self.profile.precision,
                                weights=self.weights.get(cell.model), options=export_options(self.profile))
        try:
            artifact = export(request, self.exporter, self.artifacts_dir)
        except (UnsupportedResolutionError, UnsupportedExportError) as exc:
            return self._store_failure(cell, "unsupported", str(exc))
        except (ParityError, RbenchError, RuntimeError, ValueError) as exc:
            return self._store_failure(cell, "failed", f"export: {exc}")
        if not self.force and self.store.has_completed(self._base(cell, "ok").cell, artifact.sha256,
                                                       self.protocol.key):
            return CellOutcome(cell, "skipped", "already stored for this artifact and protocol")
        environment = snapshot()
        try:
            measured = measure_cell(self.profile.runner, runner_settings(self.profile), artifact, self.protocol)
        except CellError as exc:
            return self._store_failure(cell, "failed", f"measure: {exc}", artifact)
        environment["load_average_after"] = load_average()
        work = artifact.manifest.get("work") or {}
        roofline = roofline_floor_ms(work.get("gflops", 0.0), work.get("bytes", 0), self.ceilings,
                                     self.profile.precision) | {"ceilings": self.ceilings}
        latency = measured.latency.to_dict() | {"capped": measured.capped}
        result = self._base(
            cell, "ok", None, artifact=artifact.path.name, artifact_sha256=artifact.sha256,
            latency=latency, samples=[p.samples_ms for p in measured.processes], load=measured.load_dict(),
            first_inference_ms=measured.first_inference_ms, peak_memory_mb=measured.peak_memory_mb, work=work,
            roofline=roofline, settings=measured.processes[0].settings | {"pid_isolation": "fresh process"},
            environment=environment,
        )
        self.store.add(result)
        return CellOutcome(cell, "ok", f"{measured.latency.median:.1f} ms", result)


def default_artifacts_dir() -> Path:
    return Path(os.environ.get("RBENCH_ARTIFACTS", "artifacts"))
