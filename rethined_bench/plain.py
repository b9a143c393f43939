"""Artifacts rbench did not export: a user's ONNX file or Core ML package, measured and gated as it is.

``adopt`` gives such a file what every rbench artifact has, a manifest, read from the file itself: its inputs and
outputs (names, static shapes, dtypes), its graph summary (op counts, weight bytes by dtype: what the gate's exact
mode compares), its precision (float16 weights make it fp16), and the device build's fields for the target it goes
to (a TensorRT engine or an AI Hub compile builds from an ONNX too; an ``.mlpackage`` goes to Core ML, read here
with coremltools as rbench's own packages are). The file is linked (or copied) into the artifacts directory under
its stem and sha256, with the manifest beside it, so that runners and worker processes treat it like any other
artifact. Its cells are stored under the file's stem, variant ``file``.

No PyTorch reference exists for it, so parity is "not run"; its inputs are seeded: an input whose name says mask
gets a binary hole mask, every other float input values in [0, 1] (:func:`rethined_bench.inputs.inputs_for`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .artifact import MANIFEST_VERSION, Artifact, manifest_path_for, sha256_of, size_of
from .errors import RbenchError
from .provenance import tool_versions

PLAIN_VARIANT = "file"
_UNSAFE = re.compile(r"[^\w.-]")


def _specs(values: Any, skip: set[str], where: str) -> list[dict[str, Any]]:
    """Name, static shape and dtype of graph inputs or outputs; a dynamic dimension is the user's to fix."""
    specs = []
    for value in values:
        if value.name in skip:
            continue
        tensor = value.type.tensor_type
        dims = [dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?") for dim in tensor.shape.dim]
        if any(not isinstance(dim, int) or dim < 1 for dim in dims):
            raise RbenchError(f"{where}: '{value.name}' has the dynamic shape {dims}; rbench measures fixed shapes "
                              "(export with static shapes, or fix them with onnxsim --overwrite-input-shape)")
        specs.append({"name": value.name, "shape": dims,
                      "dtype": np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name})
    return specs


def _resolution(inputs: list[dict[str, Any]], where: str) -> list[int]:
    """(H, W) of the first image-like (4-D) input: the resolution the cell is stored at."""
    for spec in inputs:
        if len(spec["shape"]) == 4:
            return spec["shape"][-2:]
    raise RbenchError(f"{where}: no 4-D (N, C, H, W) input to take the resolution from")


@dataclass(frozen=True)
class _Contents:
    """What a plain file shows of itself, whatever its format."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    params: int
    graph: dict[str, Any]  # the target-neutral summary (exporters.base.GRAPH_KEYS)
    precision: str  # the file's own: fp16 where float16 weights outweigh float32 ones
    fields: dict[str, Any]  # format-specific manifest fields


def _own_precision(weight_bytes: dict[str, int]) -> str:
    return "fp16" if weight_bytes.get("float16", 0) > weight_bytes.get("float32", 0) else "fp32"


def _read_onnx(path: Path) -> _Contents:
    from exporters.onnx import graph_statistics, graph_summary

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a model
        raise RbenchError(f"{path} is not an ONNX model: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    initializers = {tensor.name for tensor in model.graph.initializer}
    statistics = graph_statistics(model)
    return _Contents(_specs(model.graph.input, initializers, path.name), _specs(model.graph.output, set(), path.name),
                     sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer), graph_summary(statistics),
                     _own_precision(statistics["weight_bytes"]), {"onnx": statistics})


_COREML_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}  # ArrayFeatureType


def _coreml_specs(features: Any, where: str, *, shapes_required: bool) -> list[dict[str, Any]]:
    """Name, shape and dtype of a Core ML model's multi-array features (an ML Program's outputs may omit shapes)."""
    specs = []
    for feature in features:
        if feature.type.WhichOneof("Type") != "multiArrayType":
            raise RbenchError(f"{where}: '{feature.name}' is a {feature.type.WhichOneof('Type')}; rbench feeds "
                              "multi-array inputs (convert with ct.TensorType)")
        array = feature.type.multiArrayType
        if shapes_required and (not array.shape or array.WhichOneof("ShapeFlexibility")):
            raise RbenchError(f"{where}: '{feature.name}' has a flexible shape; rbench measures fixed shapes "
                              "(convert with a fixed ct.TensorType shape)")
        specs.append({"name": feature.name, "shape": list(array.shape),
                      "dtype": _COREML_DTYPES.get(array.dataType, str(array.dataType))})
    return specs


def _read_mlpackage(path: Path) -> _Contents:
    """An ML Program's features, op histogram and constants; its precision is the one most of its ops compute in
    (a package converted at fp16 keeps small constants in fp32 behind casts)."""
    from exporters.coreml import CoreMLExporter, load_program, operations, ops_by_dtype

    graph = CoreMLExporter().graph(path)
    spec, program = load_program(path)
    by_dtype = ops_by_dtype(program)
    params = sum(int(op.outputs[0].val.size) for op in operations(program) if op.op_type == "const"
                 and isinstance(op.outputs[0].val, np.ndarray) and op.outputs[0].val.dtype.kind == "f")
    inputs = _coreml_specs(spec.description.input, path.name, shapes_required=True)
    outputs = _coreml_specs(spec.description.output, path.name, shapes_required=False)
    precision = "fp16" if by_dtype.get("fp16", 0) > by_dtype.get("fp32", 0) else "fp32"
    return _Contents(inputs, outputs, params, graph, precision,
                     {"coreml": {"format": "mlprogram", "specification_version": spec.specificationVersion,
                                 "ops_by_dtype": by_dtype}})


# suffix -> (reader, the targets whose device builds take the format; the first is where it runs as it is)
_FORMATS = {".onnx": (_read_onnx, ("onnx", "tensorrt", "qnn")), ".mlpackage": (_read_mlpackage, ("coreml",))}


def adopt(path: Path, out_dir: Path, *, target: str | None = None, precision: str | None = None,
          options: dict[str, Any] | None = None) -> Artifact:
    """``path`` (an ``.onnx`` file or an ``.mlpackage``) as an rbench artifact for ``target`` (default: where the
    format runs as it is: ONNX Runtime, Core ML): at ``precision`` where the target's build chooses it (TensorRT,
    QNN), at the file's own where the file carries it (ONNX Runtime, Core ML); reused when already adopted for the
    same target and precision."""
    from .backends import create_exporter

    path = Path(path)
    if not path.exists():
        raise RbenchError(f"no artifact file at {path}")
    if path.suffix not in _FORMATS:
        raise RbenchError(f"{path}: a plain artifact must be an ONNX file (.onnx) or a Core ML package "
                          "(.mlpackage); rbench's own exports carry a manifest and run as they are")
    read, targets = _FORMATS[path.suffix]
    target = target or targets[0]
    if target not in targets:
        raise RbenchError(f"{path.name}: a {path.suffix} file goes to {', '.join(targets)}, not {target}")
    sha = sha256_of(path)
    dest = Path(out_dir) / f"{_UNSAFE.sub('_', path.stem)}-{sha[:12]}{path.suffix}"
    if manifest_path_for(dest).is_file() and dest.exists():
        cached = Artifact.load(dest)
        if cached.manifest["target"] == target and precision in (None, cached.manifest["precision"]):
            return cached
    contents = read(path)
    exporter = create_exporter(target)
    # the file's own precision, unless the device build chooses one (TensorRT, QNN)
    precision = contents.precision if exporter.halves_graph or precision is None else precision
    _place(path, dest)
    manifest = {
        "manifest_version": MANIFEST_VERSION, "name": dest.stem, "file": dest.name,
        "identity": {"file_sha256": sha, "target": target, "precision": precision},
        "model": path.stem, "variant": PLAIN_VARIANT, "target": target, "precision": precision,
        "resolution": _resolution(contents.inputs, path.name), "inputs": contents.inputs,
        "outputs": contents.outputs, "params": {"deploy": contents.params},
        "sha256": sha, "size_bytes": size_of(path), "graph": contents.graph, **contents.fields,
        "parity": {"status": "not run", "reason": "a file rbench did not export: there is no PyTorch reference"},
        "plain": {"source": str(path.resolve()), "inputs": "seeded: masks binary, other float inputs in [0, 1]"},
        "tool_versions": tool_versions(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **exporter.build_fields(options or {}, precision, contents.inputs),
    }
    manifest_path_for(dest).write_text(json.dumps(manifest, indent=2) + "\n")
    return Artifact(dest, manifest)


def _place(source: Path, dest: Path) -> None:
    """A hard link where the file system allows it (no copy of a large model), else a copy; a package directory
    is copied."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir():
        shutil.rmtree(dest)
    dest.unlink(missing_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest)
        return
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
