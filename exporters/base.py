"""What every exporter shares: the request, the artifact and its manifest, parity, and the export driver.

An export is ``model name + variant + resolution + target + precision`` → one file (or package) plus a manifest
``<artifact>.json`` (DESIGN.md, "Every artifact carries a manifest"). A target only implements :class:`Exporter`
(convert, and run the artifact here when its backend can); the rest is shared.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rethined_bench.errors import ParityError, RbenchError, read_json
from rethined_bench.inputs import make_inputs
from rethined_bench.measure.flops import work_counts
from rethined_bench.models import INPUT_NAMES, OUTPUT_NAMES, create_model, get_model_spec
from rethined_bench.optimize import deploy
from rethined_bench.provenance import code_fingerprint, tool_versions

MANIFEST_VERSION = 1
PARITY_ATOL = {"fp32": 1e-4, "fp16": 2e-2}


@dataclass(frozen=True)
class ExportRequest:
    """One artifact to build: (model, variant, resolution, target, precision) plus target options."""

    model: str
    height: int
    width: int
    target: str
    variant: str | None = None
    precision: str = "fp32"
    seed: int = 0
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def resolved_variant(self) -> str:
        spec = get_model_spec(self.model)
        spec.variant_options(self.variant)  # raises on unknown variants
        return self.variant or spec.default_variant

    @property
    def name(self) -> str:
        """``rethined_onnx-fp32_2048x2048``; non-default variants are named too (``rethined-top1_...``)."""
        spec = get_model_spec(self.model)
        variant = self.resolved_variant()
        model = self.model if variant == spec.default_variant else f"{self.model}-{variant}"
        return f"{model}_{self.target}-{self.precision}_{self.height}x{self.width}"

    def identity(self) -> dict[str, Any]:
        """What determines the artifact's content; a stored artifact is reused only if all of it matches."""
        weights_sha = sha256_of(Path(self.weights)) if self.weights else None
        return {
            "model": self.model, "variant": self.resolved_variant(), "height": self.height, "width": self.width,
            "target": self.target, "precision": self.precision, "seed": self.seed, "weights_sha256": weights_sha,
            "options": self.options, "code": code_fingerprint(),
        }


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


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
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


class Exporter(abc.ABC):
    """One export target. Subclasses convert a deploy-form module and, where possible, run the result here."""

    target: str
    suffix: str
    precisions: tuple[str, ...] = ("fp32",)

    @abc.abstractmethod
    def convert(self, model: nn.Module, request: ExportRequest, path: Path,
                example: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        """Write the artifact at ``path``; return target-specific manifest fields (e.g. graph statistics)."""

    def run_here(self, path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray | None:
        """Run the artifact on this machine and return its output, or ``None`` if the backend cannot run here."""
        return None

    def default_options(self, request: ExportRequest) -> dict[str, Any]:
        return {}


def export(request: ExportRequest, exporter: Exporter, out_dir: str | Path, *, check_parity: bool = True,
           count_work: bool = True, reuse: bool = True) -> Artifact:
    """Build (or reuse) the artifact for ``request``: create → deploy (checked) → convert → parity → manifest.

    With ``count_work`` the manifest also carries the deploy form's work counts (params, fvcore GMACs, GFLOPs,
    bytes): deterministic per artifact, so the regression gate can compare them exactly.
    An existing artifact is reused when its manifest's ``identity`` equals the request's and its file is intact.
    Parity failures raise :class:`ParityError` after the manifest is written, so the evidence stays on disk.
    """
    spec = get_model_spec(request.model)
    spec.constraint.check(request.height, request.width)
    if request.precision not in exporter.precisions:
        raise RbenchError(f"target {exporter.target} supports precisions {', '.join(exporter.precisions)}, "
                          f"not {request.precision}")
    request = ExportRequest(**(asdict(request) | {"options": exporter.default_options(request) | request.options}))
    out_dir = Path(out_dir)
    path = out_dir / f"{request.name}{exporter.suffix}"
    identity = request.identity()
    if reuse:
        cached = _reusable(path, identity)
        if cached is not None:
            return cached

    out_dir.mkdir(parents=True, exist_ok=True)
    model = create_model(request.model, request.variant, seed=request.seed, weights=request.weights)
    params_train = sum(p.numel() for p in model.parameters())
    deployed = deploy(model)
    image, mask = make_inputs(request.height, request.width, seed=request.seed)

    _remove(path)
    _remove(manifest_path_for(path))
    started = time.perf_counter()
    try:
        target_fields = exporter.convert(deployed, request, path, (image, mask))
    except Exception as exc:  # converters wrap model errors (e.g. TorchExportError); surface the user's message
        user_error = _user_error_in(exc)
        if user_error is None:
            raise
        raise user_error from exc
    export_seconds = time.perf_counter() - started

    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "name": request.name,
        "file": path.name,
        "identity": identity,
        **{k: identity[k] for k in ("model", "variant", "target", "precision")},
        "resolution": [request.height, request.width],
        "inputs": [
            {"name": INPUT_NAMES[0], "shape": list(image.shape), "dtype": "float32", "range": "[0,1]"},
            {"name": INPUT_NAMES[1], "shape": list(mask.shape), "dtype": "float32", "meaning": "1 = hole"},
        ],
        "outputs": [{"name": OUTPUT_NAMES[0], "shape": list(image.shape), "dtype": "float32", "range": "[0,1]"}],
        "params": {"train": params_train, "deploy": sum(p.numel() for p in deployed.parameters())},
        "deploy_check": deployed.deploy_check,
        "sha256": sha256_of(path),
        "size_bytes": size_of(path),
        "tool_versions": tool_versions(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(export_seconds, 3),
        **target_fields,
    }
    if count_work:
        manifest["work"] = work_counts(deployed, request.height, request.width).to_dict()
    failure = None
    if check_parity:
        manifest["parity"], failure = _check_parity(exporter, path, deployed, image, mask, request.precision)
    manifest_path_for(path).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    if failure:
        raise ParityError(failure)
    return Artifact(path, manifest)


def _check_parity(exporter: Exporter, path: Path, deployed: nn.Module, image: torch.Tensor, mask: torch.Tensor,
                  precision: str) -> tuple[dict[str, Any], str | None]:
    candidate = exporter.run_here(path, {INPUT_NAMES[0]: image.numpy(), INPUT_NAMES[1]: mask.numpy()})
    if candidate is None:
        return {"status": "not run", "reason": f"the {exporter.target} backend cannot run on this machine"}, None
    with torch.inference_mode():
        reference = deployed(image, mask).numpy()
    result = parity(reference, candidate)
    atol = PARITY_ATOL[precision]
    result |= {"status": "ok" if result["max_abs_error"] < atol else "failed", "atol": atol,
               "reference": "PyTorch fp32 deploy form", "inputs": "rethined_bench.inputs.make_inputs(seed)"}
    failure = None
    if result["status"] == "failed":
        failure = (f"{path.name}: max abs error {result['max_abs_error']:.3g} against PyTorch fp32 "
                   f"(atol {atol:g}, PSNR {result['psnr_db']:.1f} dB)")
    return result, failure


def _reusable(path: Path, identity: dict[str, Any]) -> Artifact | None:
    if not manifest_path_for(path).is_file() or not path.exists():
        return None
    try:
        artifact = Artifact.load(path)
    except RbenchError:
        return None
    parity_ok = artifact.manifest.get("parity", {}).get("status") in ("ok", "not run")
    return artifact if artifact.manifest.get("identity") == identity and parity_ok else None


def _user_error_in(exc: BaseException) -> RbenchError | None:
    """The first :class:`RbenchError` in an exception's cause/context chain, if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RbenchError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
