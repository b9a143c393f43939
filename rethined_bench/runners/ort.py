"""ONNX Runtime runner (``local-ort``): CPU execution provider on this machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from exporters.base import Artifact

from ..errors import RbenchError
from .base import Availability, LoadedModel, Runner, register_runner

GRAPH_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def create_session(path: Path, *, threads: int | None = None, graph_opt_level: str = "all",
                   providers: tuple[str, ...] = ("CPUExecutionProvider",),
                   profile_prefix: str | None = None) -> ort.InferenceSession:
    """An InferenceSession with explicit, recorded settings (threads, graph optimisation, provider).

    ``profile_prefix`` turns on ORT's per-node profiler (``end_profiling()`` returns the JSON file it wrote).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = GRAPH_OPT_LEVELS[graph_opt_level]
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types for invalid graphs
        raise RbenchError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from exc


class _OrtModel(LoadedModel):
    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def infer(self, inputs: dict[str, np.ndarray]) -> Any:
        return self.session.run(self.output_names, inputs)


@register_runner("local-ort")
class OrtRunner(Runner):
    """ONNX Runtime on this machine's CPU. Load time = ``InferenceSession()`` (file read + graph optimisation)."""

    target = "onnx"

    def __init__(self, threads: int | None = None, graph_opt_level: str = "all") -> None:
        super().__init__(threads=threads, graph_opt_level=graph_opt_level)
        if graph_opt_level not in GRAPH_OPT_LEVELS:
            raise RbenchError(f"graph_opt_level must be one of {', '.join(GRAPH_OPT_LEVELS)}")
        self.threads = threads or default_threads()
        self.graph_opt_level = graph_opt_level

    def availability(self) -> Availability:
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return Availability(False, "onnxruntime has no CPUExecutionProvider", "pip install onnxruntime")
        return Availability(True)

    def load(self, artifact: Artifact) -> LoadedModel:
        return _OrtModel(create_session(artifact.path, threads=self.threads, graph_opt_level=self.graph_opt_level))

    def settings(self) -> dict[str, Any]:
        return {
            "execution_provider": "CPUExecutionProvider",
            "intra_op_threads": self.threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": self.graph_opt_level,
            "io_binding": False,
            "input_copies": "included (numpy inputs, host memory)",
            "onnxruntime": ort.__version__,
        }
