"""ONNX target: deploy form → ONNX at a fixed resolution, checked, simplified, and run here with ONNX Runtime.

Opset 18+ uses torch's dynamo exporter (the default in torch 2.13); opsets below 18 use the TorchScript exporter,
which is the only one that writes them (13 is what TensorRT 8.2 on a Jetson Nano parses).
"""

from __future__ import annotations

import collections
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from rethined_bench.inputs import make_inputs
from rethined_bench.models import INPUT_NAMES, OUTPUT_NAMES

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


def simplify_in_place(path: Path) -> None:
    """Replace the model at ``path`` by onnxsim's simplification when that passes the full checker."""
    import onnxsim

    model = onnx.load(str(path))
    simplified, ok = onnxsim.simplify(model)
    if ok:
        onnx.checker.check_model(simplified, full_check=True)
        onnx.save(simplified, str(path))


def graph_statistics(path: Path) -> dict[str, Any]:
    """Node count by op type, opset, and initializer bytes: the deterministic facts the regression gate uses."""
    model = onnx.load(str(path), load_external_data=False)
    ops = collections.Counter(node.op_type for node in model.graph.node)
    initializer_bytes = sum(int(np.prod(t.dims)) * _itemsize(t.data_type) for t in model.graph.initializer)
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "ir_version": model.ir_version,
        "node_count": sum(ops.values()),
        "ops": dict(sorted(ops.items())),
        "initializer_bytes": initializer_bytes,
    }


def _itemsize(data_type: int) -> int:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize


class OnnxExporter(Exporter):
    target = "onnx"
    suffix = ".onnx"
    precisions = ("fp32",)

    def default_options(self, request: ExportRequest) -> dict[str, Any]:
        return {"opset": DEFAULT_OPSET}

    def convert(self, model: nn.Module, request: ExportRequest, path: Path,
                example: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        opset = int(request.options["opset"])
        export_onnx(model, path, request.height, request.width, opset=opset, example=example)
        exporter = "torch.onnx dynamo" if opset >= DYNAMO_MIN_OPSET else "torch.onnx TorchScript"
        return {"onnx": {"exporter": exporter, "simplifier": "onnxsim", **graph_statistics(path)}}

    def run_here(self, path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray | None:
        from rethined_bench.runners.ort import create_session

        session = create_session(path)
        return session.run(list(OUTPUT_NAMES), inputs)[0]
