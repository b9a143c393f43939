"""QNN target (Qualcomm AI Hub): the deploy form as ONNX plus the compile options the hosted compile job takes.

The QNN model itself (a DLC or a context binary) is compiled by AI Hub's compile job in the runner's ``prepare``,
for the device it runs on; the artifact is the portable part: an ``.onnx`` at the profile's opset (checked,
simplified, parity-checked with ONNX Runtime here) whose manifest fixes the input specs (``image``, ``mask``, static
shapes: the service refuses dynamic dimensions) and the compile options, ``--qairt_version`` included, so that a
number does not drift when the service upgrades its default QAIRT (backends.md §3.3).

fp16 is a compile option (``--quantize_full_type float16``), as ai-hub-models compiles float models for the HTP;
the ONNX stays fp32 at every precision.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from rethined_bench.errors import RbenchError
from rethined_bench.settings import setting

from .onnx import OnnxExporter

TARGET_RUNTIMES = ("qnn_dlc", "qnn_context_binary")
COMPUTE_UNITS = ("npu", "gpu", "cpu", "all")
PRECISION_OPTIONS = {"fp16": ["--quantize_full_type", "float16"], "fp32": []}
QNN_OPSET = 17  # the TorchScript exporter's newest well-trodden opset for the service's ONNX converter


@dataclass(frozen=True)
class QnnSettings:
    opset: int = setting(QNN_OPSET, key="onnx_opset", help="ONNX opset of the file uploaded to AI Hub")
    runtime: str = setting("qnn_dlc", help="--target_runtime of the compile job: qnn_dlc (portable) or "
                                           "qnn_context_binary (chipset-specific)")
    qairt: str = setting("2.42", help="--qairt_version: the QAIRT release that compiles and runs the model (pinned, "
                                      "so numbers do not move when the service's default does)")
    compute_unit: str = setting("npu", help="--compute_unit: npu, gpu, cpu or all (comma-separated)")

    def __post_init__(self) -> None:
        if self.runtime not in TARGET_RUNTIMES:
            raise RbenchError(f"runtime must be one of {', '.join(TARGET_RUNTIMES)}, not {self.runtime!r}")
        units = self.compute_unit.split(",")
        if not units or any(unit not in COMPUTE_UNITS for unit in units):
            raise RbenchError(f"compute_unit must be a comma-separated list of {', '.join(COMPUTE_UNITS)}, "
                              f"not {self.compute_unit!r}")
        if not self.qairt or self.qairt in ("default", "latest"):
            raise RbenchError(f"qairt must be a pinned version such as 2.42, not {self.qairt!r}")


def compile_options(options: dict[str, Any], precision: str) -> str:
    """The compile job's option string for the request's settings and precision."""
    return shlex.join(["--target_runtime", options["runtime"], "--compute_unit", options["compute_unit"],
                       "--qairt_version", options["qairt"], *PRECISION_OPTIONS[precision]])


class QnnExporter(OnnxExporter):
    """``rbench export --target qnn``: the ONNX AI Hub compiles for a Snapdragon, and how it is compiled."""

    target = "qnn"
    precisions = ("fp16", "fp32")
    settings_class = QnnSettings
    halves_graph = False

    def build_fields(self, options: dict[str, Any], precision: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        specs = {spec["name"]: [spec["shape"], spec["dtype"]] for spec in inputs}
        return {"qnn": {"compile_options": compile_options(options, precision),
                        "compute_unit": options["compute_unit"], "input_specs": specs, "qairt": options["qairt"],
                        "compiled": "by the AI Hub compile job in the runner's prepare, never here"}}
