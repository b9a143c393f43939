"""A sweep: every selected (model, variant, resolution) cell on one device, exported, measured and stored.

Cells are stored as they finish (a transaction each), so an interrupted sweep loses nothing; a re-run skips cells
already stored with status ``ok`` for the same device, artifact sha256 and protocol. A cell that cannot be
exported or measured is stored as ``failed`` (or ``unsupported``) with its reason, and the sweep continues.
An optional ``on_phase(cell, phase)`` callback hears each step as it begins (:data:`PHASES`), for progress displays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from exporters import ExportRequest, export, parity_inputs, parity_reference
from exporters.base import PARITY_INPUTS

from . import backends
from .artifact import Artifact, failure_message, verdict
from .devices import DeviceProfile
from .errors import ParityError, RbenchError, UnsupportedExportError, UnsupportedResolutionError
from .measure.environment import load_average, snapshot
from .measure.protocol import Protocol
from .measure.roofline import device_ceilings, roofline_floor_ms
from .measure.record import Measurement
from .plain import PLAIN_VARIANT, adopt
from .runners.base import Prepared
from .runners.jobs import JOB_STATES, JobFailed, JobRunner, Submission, finished
from .runners.local import CellError
from .store import Result, ResultStore, resolution_label


@dataclass(frozen=True)
class Cell:
    model: str
    variant: str
    resolution: int  # the height
    width: int | None = None  # None: square

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.resolution, self.width or self.resolution

    @property
    def label(self) -> str:
        return f"{self.model}/{self.variant} @{resolution_label(*self.size)}"


# the steps a cell goes through, in order, as ``on_phase`` hears them: local cells export, build and measure;
# hosted cells export, build (the compile job), submit their jobs and, once the jobs end, collect
PHASES = ("export", "build", "measure", "submit", "collect")
PhaseCallback = Callable[[Cell, str], None]


PLAIN_DIR = "files"  # where files rbench did not export are adopted, under the artifacts directory


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # "ok", "failed", "unsupported", "skipped"; "submitted" for hosted jobs left running (detach)
    detail: str = ""
    result: Result | None = None


@dataclass
class HostedCell:
    """A cell whose jobs run on a service: its build (the compile job) and its submission."""

    cell: Cell
    prepared: Prepared
    submission: Submission


class Sweep:
    """Cells on one device: the profile's exporter and runner, built from its settings; nothing backend-specific."""

    def __init__(self, profile: DeviceProfile, store: ResultStore, protocol: Protocol, artifacts_dir: Path,
                 *, force: bool = False, weights: dict[str, str] | None = None,
                 on_phase: PhaseCallback | None = None) -> None:
        self.profile, self.store, self.protocol = profile, store, protocol
        self.artifacts_dir, self.force, self.weights = artifacts_dir, force, weights or {}
        self.on_phase = on_phase
        self.runner = backends.runner_for(profile)
        self.exporter = backends.create_exporter(profile.target)
        self.export_options = backends.export_options(profile)
        self.parity_runner = backends.local_runner(profile.target)
        self._ceilings: dict[str, Any] | None = None

    @property
    def ceilings(self) -> dict[str, Any]:
        """The roofline ceilings, measured on first use where the profile asks for run-time measurement."""
        if self._ceilings is None:
            self._ceilings = device_ceilings(self.profile,
                                             lambda: self.runner.runtime_ceilings(self.store.path.parent))
        return self._ceilings

    def check_runner(self) -> None:
        availability = self.runner.availability()
        if not availability.ok:
            fix = f"; {availability.fix}" if availability.fix else ""
            raise RbenchError(f"device {self.profile.name} is not reachable here: {availability.reason}{fix}")

    def run(self, cells: list[Cell], progress: Callable[[CellOutcome], None] | None = None) -> list[CellOutcome]:
        self.check_runner()
        if self.hosted:
            return self.run_jobs(cells, report=progress or (lambda outcome: None))
        outcomes = []
        for cell in cells:
            outcome = self.run_cell(cell)
            outcomes.append(outcome)
            if progress:
                progress(outcome)
        return outcomes

    def _phase(self, cell: Cell, phase: str) -> None:
        """Tell ``on_phase`` (if any) that ``cell`` begins ``phase``."""
        if self.on_phase:
            self.on_phase(cell, phase)

    def _base(self, cell: Cell, status: str, reason: str | None = None, **fields: Any) -> Result:
        return Result(device=self.profile.name, runner=self.profile.runner, model=cell.model, variant=cell.variant,
                      height=cell.size[0], width=cell.size[1], target=self.profile.target,
                      precision=self.profile.precision, status=status, reason=reason,
                      protocol_key=self.protocol.key, protocol=self.protocol.to_dict(), **fields)

    def _store_failure(self, cell: Cell, status: str, reason: str, artifact: Artifact | None = None,
                       **fields: Any) -> CellOutcome:
        if artifact:
            fields |= {"artifact": artifact.path.name, "artifact_sha256": artifact.sha256,
                       "work": artifact.manifest.get("work")}
        result = self._base(cell, status, reason, environment=snapshot(), **fields)
        self.store.add(result)
        return CellOutcome(cell, status, reason, result)

    def _request(self, cell: Cell) -> ExportRequest:
        return ExportRequest(cell.model, *cell.size, self.profile.target, variant=cell.variant,
                             precision=self.profile.precision, weights=self.weights.get(cell.model),
                             options=self.export_options, device=self.profile.name)

    def _export(self, cell: Cell) -> Artifact | CellOutcome:
        """The cell's artifact, or its outcome when there is nothing to measure: unsupported, failed, or stored."""
        self._phase(cell, "export")
        try:
            artifact = export(self._request(cell), self.exporter, self.artifacts_dir, parity_runner=self.parity_runner)
        except (UnsupportedResolutionError, UnsupportedExportError) as exc:
            return self._store_failure(cell, "unsupported", str(exc))
        except (ParityError, RbenchError, RuntimeError, ValueError) as exc:
            return self._store_failure(cell, "failed", f"export: {exc}")
        if not self.force and self.store.has_completed(self._base(cell, "ok").cell, artifact.sha256,
                                                       self.protocol.key):
            return CellOutcome(cell, "skipped", "already stored for this artifact and protocol")
        return artifact

    def run_cell(self, cell: Cell) -> CellOutcome:
        """Export (or reuse), build on the device (or reuse), measure and store one cell. A cell the model declares
        impossible is refused by ``export`` before any work and stored as ``unsupported``."""
        artifact = self._export(cell)
        if isinstance(artifact, CellOutcome):
            return artifact
        return self._measure(cell, artifact)

    def run_artifact(self, path: Path) -> CellOutcome:
        """A file rbench did not export (``rbench run --artifact``), adopted for the device's target
        (:func:`rethined_bench.plain.adopt`) and measured like any cell, stored under the file's stem."""
        try:
            artifact = adopt(path, self.artifacts_dir / PLAIN_DIR, target=self.profile.target,
                             precision=self.profile.precision, options=self.export_options)
        except RbenchError as exc:
            raise RbenchError(f"{exc} (device {self.profile.name} runs {self.profile.target} artifacts)") from exc
        height, width = artifact.resolution
        cell = Cell(artifact.manifest["model"], PLAIN_VARIANT, height, width)
        self._phase(cell, "export")
        if not self.force and self.store.has_completed(self._base(cell, "ok").cell, artifact.sha256,
                                                       self.protocol.key):
            return CellOutcome(cell, "skipped", "already stored for this artifact and protocol")
        return self._measure(cell, artifact)

    def _measure(self, cell: Cell, artifact: Artifact) -> CellOutcome:
        """Build on the device (or reuse), measure and store an artifact's cell."""
        environment = snapshot()
        self._phase(cell, "build")
        try:
            prepared = self.runner.prepare(artifact)
        except (RbenchError, RuntimeError, OSError) as exc:
            return self._store_failure(cell, "failed", f"prepare: {exc}", artifact)
        self._phase(cell, "measure")
        try:
            measured = self.runner.measure(prepared, self.protocol)
        except (CellError, RbenchError) as exc:
            return self._store_failure(cell, "failed", f"measure: {exc}", artifact, compile_ms=prepared.compile_ms,
                                       receipt={"prepare": prepared.receipt})
        return self._store_measurement(cell, artifact, prepared, measured, environment)

    def _store_measurement(self, cell: Cell, artifact: Artifact, prepared: Prepared, measured: Measurement,
                           environment: dict[str, Any]) -> CellOutcome:
        environment["load_average_after"] = load_average()
        work = artifact.manifest.get("work") or {}
        roofline = roofline_floor_ms(work["gflops"], work["bytes"], self.ceilings, self.profile.precision) | {
            "ceilings": self.ceilings} if work else None  # a file rbench did not export has no work counts
        latency = measured.latency.to_dict() | {"capped": measured.capped}
        result = self._base(
            cell, "ok", None, artifact=artifact.path.name, artifact_sha256=artifact.sha256,
            latency=latency, samples=[p.samples_ms for p in measured.processes], load=measured.load_dict(),
            first_inference_ms=measured.first_inference_ms, peak_memory_mb=measured.peak_memory_mb, work=work,
            roofline=roofline, settings=measured.settings,
            environment=environment | ({"device_reported": measured.extra} if measured.extra else {}),
            compile_ms=prepared.compile_ms, receipt={"prepare": prepared.receipt, "measure": measured.receipt},
        )
        self.store.add(result)
        return CellOutcome(cell, "ok", f"{measured.latency.median:.1f} ms", result)

    # ------------------------------------------------------------------------------------------ hosted jobs

    @property
    def hosted(self) -> bool:
        """Whether the device's work is jobs on a service (submitted together, resumable, detachable)."""
        return isinstance(self.runner, JobRunner)

    def run_jobs(self, cells: list[Cell], *, detach: bool = False,
                 report: Callable[[CellOutcome], None] = lambda outcome: None,
                 states: Callable[[dict[str, int]], None] = lambda counts: None) -> list[CellOutcome]:
        """Hosted cells: export each and submit its jobs, or re-attach to the jobs stored for it (never submitting
        a cell twice); then poll every cell's jobs together, reporting the count of jobs per state, and store
        each cell as its jobs end. With ``detach``, return once everything is submitted: a later run collects."""
        outcomes, waiting = [], []
        for cell in cells:
            started = self._start_jobs(cell)
            if isinstance(started, CellOutcome):
                outcomes.append(started)
                report(started)
            else:
                waiting.append(started)
        if detach:
            return outcomes + [CellOutcome(job.cell, "submitted", ", ".join(job.submission.job_ids))
                               for job in waiting]
        while waiting:
            counts: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
            still = []
            for job in waiting:
                try:
                    current = self.runner.check(job.submission)
                except JobFailed as exc:
                    outcome = self._store_failure(job.cell, exc.status, str(exc), job.prepared.artifact,
                                                  receipt={"prepare": job.prepared.receipt,
                                                           "jobs": job.submission.to_dict()})
                else:
                    for state in current.values():
                        counts[state] += 1
                    if not finished(current):
                        still.append(job)
                        continue
                    self._phase(job.cell, "collect")
                    outcome = self._finish_jobs(job)
                outcomes.append(outcome)
                report(outcome)
            states(counts)
            waiting = still
            if waiting:
                time.sleep(self.runner.settings.poll_interval_s)
        return outcomes

    def _start_jobs(self, cell: Cell) -> HostedCell | CellOutcome:
        artifact = self._export(cell)
        if isinstance(artifact, CellOutcome):
            return artifact
        key = self._base(cell, "ok").cell
        stored = self.store.submission(key, artifact.sha256, self.protocol.key)
        if stored is not None:  # re-attach: the stored jobs name their compile job too, whatever the build cache says
            submission = Submission.from_dict(stored)
            return HostedCell(cell, Prepared(artifact, submission.jobs["compile"][0], None, True,
                                             stored["details"].get("prepare", {})), submission)
        self._phase(cell, "build")
        try:
            prepared = self.runner.prepare(artifact)
            self._phase(cell, "submit")
            submission = self.runner.submit(prepared, self.protocol, parity_inputs(self._request(cell)))
        except (RbenchError, RuntimeError, OSError) as exc:
            return self._store_failure(cell, "failed", f"submit: {exc}", artifact)
        submission.details["prepare"] = prepared.receipt
        self.store.save_submission(key, artifact.sha256, self.protocol.key, submission.to_dict())
        return HostedCell(cell, prepared, submission)

    def _finish_jobs(self, job: HostedCell) -> CellOutcome:
        """Collect a cell whose jobs ended, compare the device's outputs with PyTorch, store it."""
        artifact = job.prepared.artifact
        try:
            collected = self.runner.collect(job.prepared, job.submission, self.protocol)
        except JobFailed as exc:
            return self._store_failure(job.cell, exc.status, str(exc), artifact,
                                       receipt={"prepare": job.prepared.receipt, "jobs": job.submission.to_dict()})
        except RbenchError as exc:
            return self._store_failure(job.cell, "failed", f"collect: {exc}", artifact,
                                       receipt={"prepare": job.prepared.receipt, "jobs": job.submission.to_dict()})
        measured = collected.measurement
        if collected.outputs is not None:
            reference = parity_reference(self._request(job.cell))
            parity = verdict(reference, collected.outputs[0], self.profile.precision) | {
                "reference_inputs": PARITY_INPUTS, "device_outputs": "the first job's output dataset"}
            measured.extra["parity"] = parity
            failure = failure_message(artifact.path.name, parity)
            if failure:
                return self._store_failure(job.cell, "failed", f"device parity: {failure}", artifact,
                                           receipt={"measure": measured.receipt})
        return self._store_measurement(job.cell, artifact, job.prepared, measured, snapshot())
