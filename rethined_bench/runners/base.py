"""The runner lifecycle, one interface for every backend (in the manner of Polygraphy's runners):

- ``availability()``: whether the runner can work from this machine, and if not why and what to do (doctor);
- ``prepare(artifact) -> Prepared``: the device build (a TensorRT engine on the device, an AI Hub compile job, a
  Core ML compile; nothing for ONNX Runtime), cached by (artifact sha256, precision, device, toolchain version), its
  wall time kept as ``compile_ms``;
- ``measure(prepared, protocol) -> Measurement``: per-process samples, load, first inference, memory and a receipt;
  :class:`LocalRunner` times fresh worker processes on this host, a remote runner maps the protocol onto the
  device's own timer (trtexec flags, AI Hub profiler iterations);
- ``infer(prepared, inputs) -> outputs`` where the device returns outputs: what parity uses.

Each runner declares its settings as a dataclass (``settings_class``), filled from the device profile by
:mod:`rethined_bench.settings`; the registry (:mod:`rethined_bench.backends`) names runners lazily.
"""

from __future__ import annotations

import abc
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifact import Artifact
from ..measure.protocol import Protocol
from ..measure.record import Measurement
from ..settings import NoSettings

PREPARED_DIR = ".prepared"


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""
    fix: str = ""


@dataclass
class Prepared:
    """An artifact built for one device: ``handle`` is what the device runs (a local file, an engine path on the
    device, an AI Hub model id); ``compile_ms`` the build's wall time (``None`` where nothing is built)."""

    artifact: Artifact
    handle: str
    compile_ms: float | None = None
    cached: bool = False
    receipt: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.artifact.path), "handle": self.handle, "compile_ms": self.compile_ms,
                "cached": self.cached, "receipt": self.receipt}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Prepared":
        return cls(Artifact.load(data["artifact"], verify=False), data["handle"], data["compile_ms"],
                   data["cached"], data["receipt"])


@dataclass(frozen=True)
class Build:
    """What :meth:`Runner.build` made: the handle and how (command line or job id, toolchain, log path)."""

    handle: str
    receipt: dict[str, Any] = field(default_factory=dict)


class LoadedModel(abc.ABC):
    """An artifact loaded in this process, ready to run with fixed inputs."""

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one inference to completion (synchronised) and return the outputs in manifest order."""


class Runner(abc.ABC):
    """Runs artifacts of one target on one kind of device."""

    name: ClassVar[str]
    target: ClassVar[str]
    settings_class: ClassVar[type] = NoSettings
    times_build: ClassVar[bool] = True  # False where build() only submits the build (a hosted compile job)

    def __init__(self, settings: Any = None, *, device: str | None = None) -> None:
        self.settings = settings if settings is not None else self.settings_class()
        if not isinstance(self.settings, self.settings_class):
            raise TypeError(f"{type(self).__name__} takes {self.settings_class.__name__}, not "
                            f"{type(self.settings).__name__}")
        self.device = device or self.name

    @abc.abstractmethod
    def availability(self) -> Availability:
        """Whether this runner can work from this machine, and if not, why and what to do."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the numbers include: threads, provider, copies, precision handling, tool versions."""

    @abc.abstractmethod
    def measure(self, prepared: Prepared, protocol: Protocol) -> Measurement:
        """Measure ``prepared`` under ``protocol``: ``protocol.processes`` fresh processes or device sessions."""

    @abc.abstractmethod
    def infer(self, prepared: Prepared, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference's outputs, for parity."""

    # ------------------------------------------------------------------------------------------ device build

    def toolchain(self) -> str:
        """The version of what builds on the device (part of the build cache key); "" where nothing is built."""
        return ""

    def build(self, artifact: Artifact) -> Build | None:
        """Build ``artifact`` for the device; ``None`` (the default) when the device runs the artifact as it is."""
        return None

    def is_built(self, handle: str) -> bool:
        """Whether a cached build's ``handle`` still exists (a local path by default)."""
        return Path(handle).exists()

    def prepare(self, artifact: Artifact) -> Prepared:
        """The device build of ``artifact``, reused when cached for (sha256, precision, device, toolchain) and still
        there. The precision is part of the key: one ONNX file becomes an fp16 or an fp32 engine."""
        cache = BuildCache(artifact.path.parent / PREPARED_DIR)
        key = "|".join((self.name, self.device, artifact.sha256, artifact.manifest["precision"], self.toolchain()))
        entry = cache.get(key)
        if entry is not None and self.is_built(entry["handle"]):
            return Prepared(artifact, entry["handle"], entry["compile_ms"], True, entry["receipt"])
        begin = time.perf_counter()
        built = self.build(artifact)
        if built is None:
            return Prepared(artifact, str(artifact.path))
        compile_ms = (time.perf_counter() - begin) * 1e3 if self.times_build else None
        receipt = built.receipt | {"toolchain": self.toolchain(), "built_at": _now()}
        cache.put(key, {"handle": built.handle, "compile_ms": compile_ms, "receipt": receipt})
        return Prepared(artifact, built.handle, compile_ms, False, receipt)

    # ------------------------------------------------------------------------------------------ roofline

    def runtime_ceilings(self, cache_dir: Path) -> dict[str, Any]:
        """Peak compute and bandwidth measured on the device at run time, for profiles that ask for it; ``{}`` where
        this runner cannot measure them."""
        return {}


class LocalRunner(Runner):
    """A runner that loads artifacts into this Python: timed on this host in fresh worker processes
    (``rethined_bench.runners.worker``), so that every process pays its own cold load."""

    @abc.abstractmethod
    def load(self, prepared: Prepared) -> LoadedModel:
        """Load ``prepared`` (file read included): this is what load time measures."""

    def measure(self, prepared: Prepared, protocol: Protocol) -> Measurement:
        from .local import measure_in_processes

        return measure_in_processes(self, prepared, protocol)

    def infer(self, prepared: Prepared, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.load(prepared).infer(inputs))


class BuildCache:
    """Device builds by key, in ``<artifacts>/.prepared/builds.json``; written atomically (concurrent sweeps)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "builds.json"

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self._read().get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        entries = self._read() | {key: entry}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(dir=self.path.parent, prefix="builds.", suffix=".json")
        with os.fdopen(handle, "w") as out:
            json.dump(entries, out, indent=2)
        os.replace(staging, self.path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
