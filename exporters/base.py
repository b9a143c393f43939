"""What every exporter shares: the request, the manifest and the export driver.

An export is ``model name + variant + resolution + target + precision`` → one file (or package) plus a manifest
``<artifact>.json`` (DESIGN.md, "Every artifact carries a manifest"; :mod:`rethined_bench.artifact`). A target only
implements :class:`Exporter` (convert, and summarise its graph); deploy, manifest, reuse and parity are shared.
"""

from __future__ import annotations

import abc
import contextlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rethined_bench.artifact import (
    MANIFEST_VERSION, Artifact, OutputRunner, check_parity, failure_message, manifest_path_for, sha256_of, size_of,
)
from rethined_bench.errors import ParityError, RbenchError, UnsupportedExportError
from rethined_bench.inputs import make_inputs
from rethined_bench.measure.flops import work_counts
from rethined_bench.models import INPUT_NAMES, OUTPUT_NAMES, create_model, get_model_spec
from rethined_bench.optimize import deploy
from rethined_bench.provenance import code_fingerprint, tool_versions
from rethined_bench.settings import NoSettings

GRAPH_KEYS = ("format", "node_count", "ops", "weight_bytes")
PARITY_INPUTS = "rethined_bench.inputs.make_inputs(seed)"
_FILE_NAME_UNSAFE = re.compile(r"[^\w.=,+-]")  # a user model's import path has ':' (and options '=' and ',')


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
    device: str | None = None  # the device the artifact is for: only asks the model whether it can go there

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
        return _FILE_NAME_UNSAFE.sub("_", f"{model}_{self.target}-{self.precision}_{self.height}x{self.width}")

    def identity(self, exporter_module: str) -> dict[str, Any]:
        """What determines the artifact's content; a stored artifact is reused only if all of it matches. The code
        fingerprint covers the model's module, the target's exporter module and what they import."""
        weights_sha = sha256_of(Path(self.weights)) if self.weights else None
        model_module = get_model_spec(self.model).factory.__module__
        return {
            "model": self.model, "variant": self.resolved_variant(), "height": self.height, "width": self.width,
            "target": self.target, "precision": self.precision, "seed": self.seed, "weights_sha256": weights_sha,
            "options": self.options, "code": code_fingerprint(model_module, exporter_module),
        }


class Exporter(abc.ABC):
    """One export target: converts a deploy-form module and summarises the artifact's graph.

    ``settings_class`` is the dataclass of its options (filled from a device profile's ``[toolchain]``);
    ``local_runner`` names the runner that executes its artifacts on this machine (parity, the gate's A/B runs).
    """

    target: ClassVar[str]
    suffix: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    settings_class: ClassVar[type] = NoSettings
    local_runner: ClassVar[str | None] = None
    # the artifact carries its precision (an fp16 ONNX graph, an fp16 Core ML program); False where fp16 is the
    # device build's choice (TensorRT, QNN)
    halves_graph: ClassVar[bool] = True

    @abc.abstractmethod
    def convert(self, model: nn.Module, request: ExportRequest, path: Path,
                example: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        """Write the artifact at ``path``; return target-specific manifest fields."""

    @abc.abstractmethod
    def graph(self, path: Path) -> dict[str, Any]:
        """The target-neutral graph summary every manifest carries (``GRAPH_KEYS``): format, node count, node
        count by op type, weight bytes by dtype. The regression gate compares it exactly, for every target."""

    def build_fields(self, options: dict[str, Any], precision: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Manifest fields for a device build made from the artifact (none where it runs as it is), from the
        target's settings, the precision and the artifact's inputs (name, shape, dtype): also for files rbench did
        not export (:mod:`rethined_bench.plain`)."""
        return {}

    def options(self, request: ExportRequest) -> dict[str, Any]:
        """The request's options checked against ``settings_class``, with its defaults filled in."""
        try:
            return asdict(self.settings_class(**request.options))
        except TypeError as exc:
            raise RbenchError(f"target {self.target} does not take these options: {exc}") from exc


def export(request: ExportRequest, exporter: Exporter, out_dir: str | Path, *,
           parity_runner: OutputRunner | None = None, check_parity_here: bool = True, count_work: bool = True,
           reuse: bool = True) -> Artifact:
    """Build (or reuse) the artifact for ``request``: create → deploy (checked) → convert → manifest → parity.

    Parity runs the artifact on ``parity_runner`` (the target's local runner, given by the caller so that
    exporters import no runner) against the PyTorch fp32 output; where it cannot run here the manifest says why.
    With ``count_work`` the manifest also carries the deploy form's work counts (params, fvcore GMACs, GFLOPs,
    bytes): deterministic per artifact, so the regression gate can compare them exactly.
    An existing artifact is reused when its manifest's ``identity`` equals the request's and its file is intact.
    Parity failures raise :class:`ParityError` after the manifest is written, so the evidence stays on disk.
    A (model, variant, target, device) the model declares impossible raises :class:`UnsupportedExportError`.
    """
    spec = get_model_spec(request.model)
    spec.constraint.check(request.height, request.width)
    reason = spec.unsupported(request.resolved_variant(), request.target, request.device)
    if reason:
        raise UnsupportedExportError(reason)
    if request.precision not in exporter.precisions:
        raise RbenchError(f"target {exporter.target} supports precisions {', '.join(exporter.precisions)}, "
                          f"not {request.precision}")
    request = ExportRequest(**(asdict(request) | {"options": exporter.options(request)}))
    out_dir = Path(out_dir)
    path = out_dir / f"{request.name}{exporter.suffix}"
    identity = request.identity(type(exporter).__module__)
    if reuse:
        cached = _reusable(path, identity)
        if cached is not None:
            return cached

    out_dir.mkdir(parents=True, exist_ok=True)
    model = _create(request)
    params_train = sum(p.numel() for p in model.parameters())
    deployed = _deploy(model, request)
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
        "form": spec.form_options(request.resolved_variant(), request.target),
        "params": {"train": params_train, "deploy": sum(p.numel() for p in deployed.parameters())},
        "deploy_check": deployed.deploy_check,
        "sha256": sha256_of(path),
        "size_bytes": size_of(path),
        "graph": _graph(exporter, path),
        "tool_versions": tool_versions(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(export_seconds, 3),
        **target_fields,
    }
    with _outputs_for(deployed, image, mask) as seen:
        if count_work:
            manifest["work"] = work_counts(deployed, request.height, request.width).to_dict()
    artifact = Artifact(path, manifest)
    if check_parity_here:
        inputs, reference = _parity_case(deployed, image, mask, seen)
        manifest["parity"] = check_parity(artifact, parity_runner, inputs, reference) | {"inputs": PARITY_INPUTS}
    manifest_path_for(path).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    failure = failure_message(path.name, manifest.get("parity", {}))
    if failure:
        raise ParityError(failure)
    return artifact


def _create(request: ExportRequest) -> nn.Module:
    """The request's model in the form its target gets (``ModelSpec.form_options``)."""
    form = get_model_spec(request.model).form_options(request.resolved_variant(), request.target)
    return create_model(request.model, request.variant, seed=request.seed, weights=request.weights, **form)


def _deploy(model: nn.Module, request: ExportRequest) -> nn.Module:
    """The checked deploy form. rbench's models are checked at their smallest size; a user model, which declares
    none on the module, at the requested size, where it must work: its failing there is one line, not a trace."""
    if hasattr(model, "constraint"):
        return deploy(model)
    try:
        return deploy(model, check_size=(request.height, request.width))
    except RbenchError:
        raise
    except Exception as exc:  # the user's forward, at a size it cannot take
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RbenchError(f"model {request.model} fails at {request.height}x{request.width}: {first}") from exc


@contextlib.contextmanager
def _outputs_for(model: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> Iterator[list[torch.Tensor]]:
    """Keep ``model``'s outputs for exactly (image, mask) while the block runs: counting work at the cell's size
    (fvcore traces a real forward) computes parity's reference on the way, which at 4096² costs seconds to redo."""
    seen: list[torch.Tensor] = []

    def keep(_module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if (isinstance(output, torch.Tensor) and output.device.type == "cpu" and len(args) == 2
                and all(isinstance(a, torch.Tensor) and a.device.type == "cpu" for a in args)
                and torch.equal(args[0], image) and torch.equal(args[1], mask)):
            seen.append(output.detach().clone())

    handle = model.register_forward_hook(keep)
    try:
        yield seen
    finally:
        handle.remove()


def _parity_case(deployed: nn.Module, image: torch.Tensor, mask: torch.Tensor, seen: Sequence[torch.Tensor] = ()
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Parity's inputs and the PyTorch reference output (one already computed for them, or a forward now)."""
    if seen:
        reference = seen[0].numpy()
    else:
        with torch.inference_mode():
            reference = deployed(image, mask).numpy()
    return {INPUT_NAMES[0]: image.numpy(), INPUT_NAMES[1]: mask.numpy()}, reference


def parity_inputs(request: ExportRequest) -> dict[str, np.ndarray]:
    """The seeded inputs parity uses for ``request``'s cell (the ones export's parity check ran)."""
    image, mask = make_inputs(request.height, request.width, seed=request.seed)
    return {INPUT_NAMES[0]: image.numpy(), INPUT_NAMES[1]: mask.numpy()}


def parity_reference(request: ExportRequest) -> np.ndarray:
    """The PyTorch fp32 deploy form's output for :func:`parity_inputs`: what a device's outputs are compared with
    where the device returns them later (a hosted job), as export's parity does here."""
    model = _create(request)
    image, mask = make_inputs(request.height, request.width, seed=request.seed)
    return _parity_case(_deploy(model, request), image, mask)[1]


def _graph(exporter: Exporter, path: Path) -> dict[str, Any]:
    """The exporter's graph summary, which must have exactly ``GRAPH_KEYS`` (the gate compares them across
    targets)."""
    graph = exporter.graph(path)
    if tuple(graph) != GRAPH_KEYS:
        raise TypeError(f"{type(exporter).__name__}.graph() returned keys {tuple(graph)}, not {GRAPH_KEYS}")
    return graph


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
