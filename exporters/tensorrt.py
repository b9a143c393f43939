"""TensorRT target: the deploy form as ONNX at the opset the device's TensorRT parses, plus what its build needs.

The engine itself is never built here: a TensorRT engine is specific to the GPU and the TensorRT version that built
it, so the runner's ``prepare`` builds it where it runs (on the Jetson with its TensorRT 8.2, or on this machine's
GPU). The artifact is the portable part: an ``.onnx`` (checked, simplified, parity-checked with ONNX Runtime like
``--target onnx``) whose manifest says which TensorRT the engine must be built with and with which flags.

Opsets: TensorRT 8.2's ONNX parser (JetPack 4.6, the last release for the Jetson Nano) reads opset <= 13, which
only torch's TorchScript exporter still writes; TensorRT 10's reads opsets 9 to 20 (onnx-tensorrt's operator
matrix; backends.md §2.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rethined_bench.errors import RbenchError
from rethined_bench.settings import setting

from .onnx import DEFAULT_OPSET, OnnxExporter

# TensorRT major.minor → the newest ONNX opset its parser reads (onnx-tensorrt's operator support matrix)
MAX_OPSET = {"8.2": 13, "10": 20}
BUILD_FLAGS = {"fp16": ["--fp16"], "fp32": []}  # trtexec's spelling; the Python API sets BuilderFlag.FP16 alike


@dataclass(frozen=True)
class TensorRTSettings:
    opset: int = setting(DEFAULT_OPSET, key="onnx_opset", help="ONNX opset (13 for TensorRT 8.2)")
    tensorrt: str = setting("10", help="the TensorRT version the engine is built with on the device (8.2, 10, ...)")

    def __post_init__(self) -> None:
        newest = max_opset(self.tensorrt)
        if newest is not None and self.opset > newest:
            raise RbenchError(f"TensorRT {self.tensorrt}'s ONNX parser reads opset <= {newest}, not {self.opset}; "
                              f"set onnx_opset = {newest} (or --opset {newest})")


def max_opset(version: str) -> int | None:
    """The newest opset TensorRT ``version`` parses, from its major.minor (or major) release; None if unknown."""
    parts = version.split(".")
    return MAX_OPSET.get(".".join(parts[:2])) or MAX_OPSET.get(parts[0])


class TensorRTExporter(OnnxExporter):
    """``rbench export --target tensorrt``: the ONNX a device's TensorRT builds its engine from. It stays fp32 at
    every precision: fp16 is a build flag (``--fp16``), TensorRT picks the layer precisions itself."""

    target = "tensorrt"
    precisions = ("fp16", "fp32")
    settings_class = TensorRTSettings
    halves_graph = False

    def build_fields(self, options: dict[str, Any], precision: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"tensorrt": {"build_with": options["tensorrt"], "precision": precision,
                             "build_flags": BUILD_FLAGS[precision],
                             "engine": "built on the device by the runner's prepare, never here"}}
