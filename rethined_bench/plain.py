"""Artifacts rbench did not export: a user's ONNX file, measured and gated as it is.

``adopt`` gives such a file what every rbench artifact has, a manifest, read from the file itself: its inputs and
outputs (names, static shapes, dtypes), its graph summary (op counts, weight bytes by dtype: what the gate's exact
mode compares), its precision (float16 weights make it fp16), and the device build's fields for the target it goes
to (a TensorRT engine or an AI Hub compile builds from an ONNX too). The file is linked (or copied) into the
artifacts directory under its stem and sha256, with the manifest beside it, so that runners and worker processes
treat it like any other artifact. Its cells are stored under the file's stem, variant ``file``.

No PyTorch reference exists for it, so parity is "not run"; its inputs are seeded: an input whose name says mask
gets a binary hole mask, every other float input values in [0, 1] (:func:`rethined_bench.inputs.inputs_for`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
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


def adopt(path: Path, out_dir: Path, *, target: str = "onnx", precision: str | None = None,
          options: dict[str, Any] | None = None) -> Artifact:
    """``path`` (an ``.onnx`` file) as an rbench artifact for ``target``: at ``precision`` where the target's build
    chooses it (TensorRT, QNN), at the file's own where the graph carries it (ONNX Runtime); reused when already
    adopted for the same target and precision."""
    from exporters.onnx import graph_statistics, graph_summary

    from .backends import create_exporter

    path = Path(path)
    if not path.is_file():
        raise RbenchError(f"no artifact file at {path}")
    if path.suffix != ".onnx":
        raise RbenchError(f"{path}: a plain artifact must be an ONNX file (.onnx); rbench's own exports carry a "
                          "manifest and run as they are")
    sha = sha256_of(path)
    dest = Path(out_dir) / f"{_UNSAFE.sub('_', path.stem)}-{sha[:12]}.onnx"
    if manifest_path_for(dest).is_file() and dest.is_file():
        cached = Artifact.load(dest)
        if cached.manifest["target"] == target and precision in (None, cached.manifest["precision"]):
            return cached
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a model
        raise RbenchError(f"{path} is not an ONNX model: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = _specs(model.graph.input, initializers, path.name)
    outputs = _specs(model.graph.output, set(), path.name)
    statistics = graph_statistics(model)
    weights = statistics["weight_bytes"]
    exporter = create_exporter(target)
    own = "fp16" if weights.get("float16", 0) > weights.get("float32", 0) else "fp32"
    precision = own if exporter.halves_graph or precision is None else precision  # the graph's, or the build's
    _place(path, dest)
    manifest = {
        "manifest_version": MANIFEST_VERSION, "name": dest.stem, "file": dest.name,
        "identity": {"file_sha256": sha, "target": target, "precision": precision},
        "model": path.stem, "variant": PLAIN_VARIANT, "target": target, "precision": precision,
        "resolution": _resolution(inputs, path.name), "inputs": inputs, "outputs": outputs,
        "params": {"deploy": sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer)},
        "sha256": sha, "size_bytes": size_of(path), "graph": graph_summary(statistics), "onnx": statistics,
        "parity": {"status": "not run", "reason": "a file rbench did not export: there is no PyTorch reference"},
        "plain": {"source": str(path.resolve()), "inputs": "seeded: masks binary, other float inputs in [0, 1]"},
        "tool_versions": tool_versions(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **exporter.build_fields(options or {}, precision, inputs),
    }
    manifest_path_for(dest).write_text(json.dumps(manifest, indent=2) + "\n")
    return Artifact(dest, manifest)


def _place(source: Path, dest: Path) -> None:
    """A hard link where the file system allows it (no copy of a large model), else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
