"""ONNX Runtime runner (``local-ort``): the CPU execution provider on this machine, timed in fresh processes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from ..errors import RbenchError
from ..settings import setting
from .base import Availability, LoadedModel, LocalRunner, Prepared

if TYPE_CHECKING:
    from ..measure.breakdown import StageTimes

GRAPH_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def create_session(path: Path, *, threads: int | None = None, graph_opt_level: str = "all",
                   providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
                   profile_prefix: str | None = None, config: Mapping[str, str] | None = None
                   ) -> ort.InferenceSession:
    """An InferenceSession with explicit, recorded settings (threads, graph optimisation, providers, each a name or
    ``(name, provider options)``, and session ``config`` entries such as ``session.disable_cpu_ep_fallback``).

    ORT's retry on the CPU provider after a provider error is off (``enable_fallback=0``): a session runs on the
    providers asked for or fails. A provider that cannot be created at all is still skipped with a warning, so
    callers that ask for a device check ``get_providers()``. ``profile_prefix`` turns on ORT's per-node profiler
    (``end_profiling()`` returns the JSON file it wrote).
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
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers), enable_fallback=0)
    except Exception as exc:  # ORT raises its own exception types for invalid graphs
        raise RbenchError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from exc


def profile_stages(onnx_path: Path, inputs: Mapping[str, np.ndarray], stage_of: Mapping[str, str], *,
                   threads: int, runs: int = 3, workdir: Path | None = None) -> "StageTimes":
    """Run ``runs`` profiled inferences after one warm-up in a fresh ORT session and attribute their kernel times
    to stages (:func:`rethined_bench.measure.breakdown.attribute`)."""
    from ..measure.breakdown import attribute

    prefix = str((workdir or onnx_path.parent) / f"{onnx_path.stem}.profile")
    session = create_session(onnx_path, threads=threads, profile_prefix=prefix)
    for _ in range(1 + runs):
        session.run(None, dict(inputs))
    profile = Path(session.end_profiling())
    try:
        return attribute(json.loads(profile.read_text()), stage_of, skip_runs=1)
    finally:
        profile.unlink(missing_ok=True)


class _OrtModel(LoadedModel):
    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, inputs)


@dataclass(frozen=True)
class OrtSettings:
    threads: int | None = setting(None, help="intra-op threads (default: the CPUs this process may use)")
    graph_opt_level: str = setting("all", help="disable, basic, extended or all")

    def __post_init__(self) -> None:
        if self.graph_opt_level not in GRAPH_OPT_LEVELS:
            raise RbenchError(f"graph_opt_level must be one of {', '.join(GRAPH_OPT_LEVELS)}, "
                              f"not {self.graph_opt_level!r}")
        if self.threads is not None and self.threads < 1:
            raise RbenchError(f"threads must be >= 1, not {self.threads}")


class OrtRunner(LocalRunner):
    """ONNX Runtime on this machine's CPU. Load time = ``InferenceSession()`` (file read + graph optimisation)."""

    name = "local-ort"
    target = "onnx"
    settings_class = OrtSettings

    @property
    def threads(self) -> int:
        return self.settings.threads or default_threads()

    def availability(self) -> Availability:
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return Availability(False, "onnxruntime has no CPUExecutionProvider", "pip install onnxruntime")
        return Availability(True)

    def load(self, prepared: Prepared) -> LoadedModel:
        return _OrtModel(create_session(Path(prepared.handle), threads=self.threads,
                                        graph_opt_level=self.settings.graph_opt_level))

    def describe(self) -> dict[str, Any]:
        return {
            "execution_provider": "CPUExecutionProvider",
            "intra_op_threads": self.threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": self.settings.graph_opt_level,
            "io_binding": False,
            "input_copies": "included (numpy inputs, host memory)",
            "load_cold": "InferenceSession() in a fresh process (file read and graph optimisation included)",
            "load_warm": "InferenceSession() again in the same process",
            "onnxruntime": ort.__version__,
        }

    def runtime_ceilings(self, cache_dir: Path) -> dict[str, Any]:
        """This host's CPU: a large fp32 matmul and a large copy, cached per host."""
        from ..measure.roofline import host_ceilings

        return host_ceilings(cache_dir)
