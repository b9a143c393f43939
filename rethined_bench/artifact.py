"""Artifacts and parity: what exporters write and runners read, so that neither imports the other.

An artifact is one exported file (or package directory) plus its manifest ``<artifact>.json`` (DESIGN.md, "Every
artifact carries a manifest"). Parity is one comparison for every backend: a runner that can return outputs
(:class:`OutputRunner`: ORT, Core ML on a Mac, a TensorRT engine, an AI Hub inference job) runs the artifact on
fixed inputs and its first output is compared with the PyTorch fp32 reference, in the manner of Polygraphy's
``Comparator``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ParityError, RbenchError, read_json

MANIFEST_VERSION = 2  # 2: target-neutral ``graph`` summary, code fingerprint per model and target
PARITY_ATOL = {"fp32": 1e-4, "fp16": 2e-2}


@dataclass
class Artifact:
    """An exported model file (or package directory) and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def manifest_path(self) -> Path:
        return manifest_path_for(self.path)

    @property
    def sha256(self) -> str:
        return self.manifest["sha256"]

    @property
    def resolution(self) -> tuple[int, int]:
        height, width = self.manifest["resolution"]
        return int(height), int(width)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> "Artifact":
        """Read an artifact and its manifest; with ``verify``, a changed or truncated file is a clear error."""
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix("")
        manifest_file = manifest_path_for(path)
        if not path.exists():
            raise RbenchError(f"artifact not found: {path}")
        manifest = read_json(manifest_file, fix="; re-export the artifact",
                             missing=f"artifact {path} has no manifest {manifest_file.name}; re-export it with "
                                     "rbench export")
        if verify and sha256_of(path) != manifest.get("sha256"):
            raise RbenchError(f"artifact {path} does not match its manifest's sha256 (corrupted or modified); "
                              "re-export it with rbench export")
        return cls(path, manifest)


def manifest_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted), e.g. an .mlpackage."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------------- parity

def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Max and mean absolute error, and PSNR (dB, peak 1.0) of ``candidate`` against ``reference``."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ParityError(f"output shape {candidate.shape} differs from the reference {reference.shape}")
    diff = np.abs(reference - candidate)
    mse = float(np.mean(diff**2))
    return {
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "psnr_db": math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse),
    }


def verdict(reference: np.ndarray, candidate: np.ndarray, precision: str) -> dict[str, Any]:
    """:func:`compare` plus the status against the precision's tolerance (``PARITY_ATOL``)."""
    result = compare(reference, candidate)
    atol = PARITY_ATOL[precision]
    return result | {"status": "ok" if result["max_abs_error"] < atol else "failed", "atol": atol,
                     "reference": "PyTorch fp32 deploy form"}


def failure_message(name: str, result: dict[str, Any]) -> str | None:
    """The one-line reason a parity result failed, or ``None`` when it passed or was not run."""
    if result.get("status") != "failed":
        return None
    return (f"{name}: max abs error {result['max_abs_error']:.3g} against PyTorch fp32 "
            f"(atol {result['atol']:g}, PSNR {result['psnr_db']:.1f} dB)")


class OutputRunner(Protocol):
    """What parity needs of a runner: whether it works here, the device build, and outputs for inputs."""

    name: str

    def availability(self) -> Any: ...

    def prepare(self, artifact: Artifact) -> Any: ...

    def infer(self, prepared: Any, inputs: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def check_parity(artifact: Artifact, runner: OutputRunner | None, inputs: dict[str, np.ndarray],
                 reference: np.ndarray) -> dict[str, Any]:
    """Run ``artifact`` on ``runner`` and compare its first output with ``reference`` (the PyTorch fp32 output).

    Returns ``{"status": "not run", "reason": ...}`` where no runner can execute the artifact on this machine.
    """
    if runner is None:
        return {"status": "not run", "reason": f"no runner executes {artifact.manifest['target']} artifacts here"}
    availability = runner.availability()
    if not availability.ok:
        return {"status": "not run", "reason": f"{runner.name}: {availability.reason}"}
    outputs = runner.infer(runner.prepare(artifact), inputs)
    return verdict(reference, outputs[0], artifact.manifest["precision"]) | {"runner": runner.name}
