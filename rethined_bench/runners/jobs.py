"""Runners whose device work is jobs on a hosted service (Qualcomm AI Hub): submitted at once, polled together,
collected when done, re-attached after an interrupted or detached sweep.

A hosted job is paid for and queued, so the job ids of a cell are its state: the sweep stores a cell's
:class:`Submission` as soon as the jobs exist (:meth:`rethined_bench.store.ResultStore.save_submission`) and a later
``rbench run`` re-attaches to them instead of submitting again. :class:`JobRunner` adds three steps to the runner
lifecycle (``submit``, ``states``, ``collect``) and builds the synchronous ``measure`` on them, so a job runner also
serves every caller that measures one prepared artifact and waits.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RbenchError
from ..measure.protocol import Protocol
from ..measure.record import Measurement
from .base import Prepared, Runner

# what a job is doing, for the progress display; "done" and "failed" are terminal
JOB_STATES = ("queued", "compiling", "profiling", "running", "done", "failed")
TERMINAL = ("done", "failed")


def finished(states: dict[str, str]) -> bool:
    """Whether every job of a submission ended."""
    return all(state in TERMINAL for state in states.values())


class JobFailed(RbenchError):
    """A cell's jobs ended without a measurement; ``status`` is how the cell is stored (``failed`` or
    ``unsupported``: the service refused the model, e.g. an op it cannot compile)."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Submission:
    """The jobs one cell was submitted as: ids by role (``compile``, ``profile``), when, and what they need to be
    collected (dataset ids, the device); JSON-safe, stored until the cell's result is."""

    jobs: dict[str, list[str]]
    submitted_at: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def job_ids(self) -> list[str]:
        return [job for ids in self.jobs.values() for job in ids]

    def age_s(self) -> float:
        return time.time() - self.submitted_at

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "submitted_at": self.submitted_at, "details": self.details}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Submission":
        return cls({role: list(ids) for role, ids in data["jobs"].items()}, float(data["submitted_at"]),
                   dict(data.get("details", {})))


@dataclass
class Collected:
    """A finished cell: its measurement, and the outputs one job returned for the cell's inputs (for parity;
    ``None`` when the jobs ran without inputs)."""

    measurement: Measurement
    outputs: list[np.ndarray] | None


class JobRunner(Runner):
    """A runner whose ``measure`` is jobs on a service. Subclasses submit, report states and collect; the deadline
    (``settings.deadline_s``, from submission) and polling interval (``settings.poll_interval_s``) are settings."""

    @abc.abstractmethod
    def submit(self, prepared: Prepared, protocol: Protocol,
               inputs: dict[str, np.ndarray] | None = None) -> Submission:
        """Submit the protocol's jobs for ``prepared`` (and ``inputs``, whose outputs parity compares); return at
        once, without waiting for any job."""

    @abc.abstractmethod
    def states(self, submission: Submission) -> dict[str, str]:
        """Each job's state now, one of :data:`JOB_STATES`, by job id."""

    @abc.abstractmethod
    def collect(self, prepared: Prepared, submission: Submission, protocol: Protocol) -> Collected:
        """The measurement of a submission whose jobs all ended; :class:`JobFailed` when one failed."""

    def check(self, submission: Submission) -> dict[str, str]:
        """The jobs' states now (see :meth:`states`); :class:`JobFailed` when some have not ended by the deadline."""
        states = self.states(submission)
        if not finished(states) and submission.age_s() > self.settings.deadline_s:
            waiting = ", ".join(f"{job} {state}" for job, state in states.items() if state not in TERMINAL)
            raise JobFailed(f"jobs not finished {self.settings.deadline_s} s after submission ({waiting})")
        return states

    def wait(self, submission: Submission) -> None:
        while not finished(self.check(submission)):
            time.sleep(self.settings.poll_interval_s)

    def measure(self, prepared: Prepared, protocol: Protocol) -> Measurement:
        submission = self.submit(prepared, protocol)
        self.wait(submission)
        return self.collect(prepared, submission, protocol).measurement
