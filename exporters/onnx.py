"""ONNX target: deploy form → ONNX at a fixed resolution, checked, simplified, and run here with ONNX Runtime.

Opset 18+ uses torch's dynamo exporter (the default in torch 2.13); opsets below 18 use the TorchScript exporter,
which is the only one that writes them (13 is what TensorRT 8.2 on a Jetson Nano parses).

fp16 is the fp32 graph with its weights and activations converted to float16 by ONNX Runtime's own converter
(``onnxruntime.transformers.float16``), inputs and outputs kept float32 (``keep_io_types``) so that every runner
feeds the same arrays; ORT's default op block list keeps the ops it cannot run in fp16 in fp32 behind casts.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import torch
from torch import nn

from rethined_bench.inputs import make_inputs
from rethined_bench.models import INPUT_NAMES, OUTPUT_NAMES
from rethined_bench.settings import setting

from .base import ExportRequest, Exporter

DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18
# torch's exporter logs that optional torchvision ops are skipped: irrelevant here and noise for users
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_onnx(model: nn.Module, path: Path, height: int, width: int, opset: int = DEFAULT_OPSET,
                example: tuple[torch.Tensor, torch.Tensor] | None = None, simplify: bool = True) -> Path:
    """Export ``model`` (pipeline contract: image, mask → inpainted) at a fixed (1, ·, H, W) to one ``.onnx`` file.

    Runs ``onnx.checker`` and onnxsim (the simplified graph is kept only if it passes the checker too).
    """
    path = Path(path)
    image, mask = example if example is not None else make_inputs(height, width)
    model = model.eval()
    # no_grad: the TorchScript exporter otherwise records autograd (18.8 GB peak instead of 4.3 GB at 4096²)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, tracer warnings) is not for users
        if opset >= DYNAMO_MIN_OPSET:
            program = torch.onnx.export(model, (image, mask), dynamo=True, opset_version=opset,
                                        input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                        external_data=False, verbose=False)
            program.save(str(path), external_data=False)
        else:
            torch.onnx.export(model, (image, mask), str(path), dynamo=False, opset_version=opset,
                              input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                              do_constant_folding=True)
    onnx.checker.check_model(str(path), full_check=True)
    if simplify:
        simplify_in_place(path)
    return path


@contextlib.contextmanager
def _quiet_native_output() -> Iterator[None]:
    """Discard what native code writes to the process's standard output and error meanwhile (Python exceptions
    still propagate, and print after)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def simplify_in_place(path: Path) -> None:
    """Replace the model at ``path`` by onnxsim's simplification when that passes the full checker."""
    import onnxsim

    model = onnx.load(str(path))
    with _quiet_native_output():  # onnxsim prints a warning per subgraph it tried to fold and could not
        simplified, ok = onnxsim.simplify(model)
    if ok:
        onnx.checker.check_model(simplified, full_check=True)
        onnx.save(simplified, str(path))


def graph_statistics(source: Path | onnx.ModelProto) -> dict[str, Any]:
    """Node count by op type, opset, and initializer bytes by dtype: deterministic facts of an ONNX file (or of a
    model already loaded)."""
    model = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source), load_external_data=False)
    ops = collections.Counter(node.op_type for node in model.graph.node)
    weight_bytes: collections.Counter[str] = collections.Counter()
    for tensor in model.graph.initializer:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        weight_bytes[dtype.name] += int(np.prod(tensor.dims)) * dtype.itemsize
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "ir_version": model.ir_version,
        "node_count": sum(ops.values()),
        "ops": dict(sorted(ops.items())),
        "initializer_bytes": sum(weight_bytes.values()),
        "weight_bytes": dict(sorted(weight_bytes.items())),
    }


def onnx_graph(path: Path) -> dict[str, Any]:
    """The target-neutral ``graph`` summary of an ONNX file (``exporters.base.GRAPH_KEYS``)."""
    return graph_summary(graph_statistics(path))


def graph_summary(statistics: dict[str, Any]) -> dict[str, Any]:
    """The ``graph`` summary from :func:`graph_statistics`."""
    return {"format": "onnx", "node_count": statistics["node_count"], "ops": statistics["ops"],
            "weight_bytes": statistics["weight_bytes"]}


@dataclass(frozen=True)
class OnnxSettings:
    opset: int = setting(DEFAULT_OPSET, key="onnx_opset",
                         help="ONNX opset (>= 18: dynamo exporter; 13 for TensorRT 8.2: TorchScript exporter)")


def convert_to_fp16(path: Path) -> dict[str, Any]:
    """Rewrite the fp32 model at ``path`` in float16 (weights and activations; float32 inputs and outputs)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(path))
    kept = {node.op_type for node in model.graph.node} & set(DEFAULT_OP_BLOCK_LIST)
    converted = convert_float_to_float16(model, keep_io_types=True)
    _drop_repeated_casts(converted.graph)
    converted = ir.from_proto(converted)
    converted.graph.sort()  # the converter appends its input casts after the nodes that read them
    onnx.save(ir.to_proto(converted), str(path))
    onnx.checker.check_model(str(path), full_check=True)
    simplify_in_place(path)
    return {"converter": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True,
            "ops_kept_fp32": sorted(kept)}


def _drop_repeated_casts(graph: onnx.GraphProto) -> None:
    """Remove the converter's second copy of a Cast it inserts once per consumer of a value that must stay fp32
    (a Resize's scales read by two Resizes, in TorchScript-exported graphs): the copies are the same node writing
    the same name, which ONNX forbids. A different node writing a taken name is left for the checker to refuse."""
    seen: dict[str, onnx.NodeProto] = {}
    repeated = []
    for node in graph.node:
        first = next((seen[name] for name in node.output if name in seen), None)
        if first is not None and node.op_type == "Cast" and (first.op_type, list(first.input), list(
                first.output), list(first.attribute)) == (node.op_type, list(node.input), list(node.output),
                                                          list(node.attribute)):
            repeated.append(node)
        seen.update((name, node) for name in node.output)
    for node in repeated:
        graph.node.remove(node)


class OnnxExporter(Exporter):
    target = "onnx"
    suffix = ".onnx"
    precisions = ("fp32", "fp16")
    settings_class = OnnxSettings
    local_runner = "local-ort"

    def convert(self, model: nn.Module, request: ExportRequest, path: Path,
                example: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        """The ONNX at the requested opset (checked, simplified; in float16 at fp16 where the graph carries the
        precision), its manifest fields, and what the device's build needs (:meth:`build_fields`)."""
        opset = int(request.options["opset"])
        export_onnx(model, path, request.height, request.width, opset=opset, example=example)
        fields: dict[str, Any] = {"exporter": "torch.onnx dynamo" if opset >= DYNAMO_MIN_OPSET
                                  else "torch.onnx TorchScript", "simplifier": "onnxsim"}
        if request.precision == "fp16" and self.halves_graph:
            fields["fp16"] = convert_to_fp16(path)
        specs = [{"name": name, "shape": list(tensor.shape), "dtype": "float32"}
                 for name, tensor in zip(INPUT_NAMES, example)]
        return {"onnx": fields | graph_statistics(path)} | self.build_fields(request.options, request.precision, specs)

    def graph(self, path: Path) -> dict[str, Any]:
        return onnx_graph(path)
