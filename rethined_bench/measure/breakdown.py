"""Where an ONNX Runtime inference spends its time, by the PyTorch module each node came from.

torch's dynamo exporter records every node's module path in its metadata (``pkg.torch.onnx.name_scopes``).
onnxsim drops that metadata but keeps node and value names, so the map is read from the unsimplified export and
applied to the simplified graph that is actually run. ORT's profiler then reports one ``<name>_kernel_time`` event
per executed kernel, under names its graph optimisations derive from the exported ones:

- fusions keep the first node's name before a ``/`` (``node_select_1/GatherSliceToSplitFusion``);
- NCHWc convolutions are named after their output value (``relu_3_nchwc`` computes value ``relu_3``);
- nodes ORT inserts itself (``ReorderInput``/``ReorderOutput`` layout changes, ``Squeeze``) have no exported origin:
  they are charged to the stage of the kernel that ran just before them, and their total is reported separately
  so that the approximation stays visible.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

OTHER = "other"
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
KERNEL_SUFFIX = "_kernel_time"
NCHWC_SUFFIX = "_nchwc"


@dataclass
class StageTimes:
    """Kernel milliseconds per inference, per stage, over ``runs`` profiled inferences."""

    ms: dict[str, float]
    inserted_ms: float  # part of ``ms`` charged by position (ORT-inserted kernels)
    run_ms: float  # wall time of one profiled inference (ORT's model_run), kernels and everything between them
    runs: int
    unresolved: list[str] = field(default_factory=list)  # kernel names that were charged by position

    @property
    def kernel_ms(self) -> float:
        return sum(self.ms.values())

    def shares(self) -> dict[str, float]:
        total = self.kernel_ms
        return {stage: value / total for stage, value in self.ms.items()} if total else {}

    def to_dict(self) -> dict[str, Any]:
        return {"ms": self.ms, "shares": self.shares(), "kernel_ms": self.kernel_ms, "inserted_ms": self.inserted_ms,
                "run_ms": self.run_ms, "runs": self.runs}


def module_paths(model: onnx.ModelProto) -> dict[str, tuple[str, ...]]:
    """Node names and output value names → the module path that produced them (outermost first, root dropped)."""
    paths: dict[str, tuple[str, ...]] = {}
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == SCOPES_KEY), None)
        if scopes is None:
            continue
        path = tuple(s for s in ast.literal_eval(scopes)[:-1] if s)  # the last entry is the op itself
        for name in (node.name, *node.output):
            paths[name] = path
    return paths


def stage_map(paths: Mapping[str, Sequence[str]], stages: Mapping[str, Sequence[str]],
              run: onnx.ModelProto | None = None) -> dict[str, str]:
    """Node and value names → stage label, from the exported graph's :func:`module_paths`.

    ``stages`` maps a label to module names (``{"encoder": ["refine"]}``); a node belongs to the first label one of
    whose names is on its module path as whole components (``net.refine.block4`` is under ``refine`` and under
    ``net.refine``, not under ``ref``), else to ``other``.
    ``run`` is the graph that is executed when it differs from the exported one (onnxsim's output). A node the
    simplifier created (a ``Gemm`` fused from MatMul + Add, a new ``Reshape``) takes, in topological order, the
    stage of its output if that value was exported, else of a parameter it reads (initializers keep their module
    path names, ``net.asap.lowres_stream.out_para.0.bias``), else of its first input whose stage is known.
    """

    def stage_of(path: Sequence[str]) -> str:
        for label, names in stages.items():
            if any(f".{name}." in f".{entry}." for entry in path for name in names):
                return label
        return OTHER

    mapping = {name: stage_of(path) for name, path in paths.items()}
    if run is None:
        return mapping
    parameters = {i.name: stage_of((i.name,)) for i in run.graph.initializer}

    def inferred(node: onnx.NodeProto) -> str:
        candidates = [*(mapping.get(o) for o in node.output),
                      *(stage for i in node.input if (stage := parameters.get(i)) != OTHER),
                      *(mapping.get(i) for i in node.input)]
        return next((stage for stage in candidates if stage is not None), OTHER)

    for node in run.graph.node:
        if node.name not in mapping:
            mapping[node.name] = inferred(node)
        for output in node.output:
            mapping.setdefault(output, mapping[node.name])
    return mapping


def _exported_name(kernel: str, known: Mapping[str, str]) -> str | None:
    for candidate in (kernel, kernel.split("/", 1)[0], kernel.removesuffix(NCHWC_SUFFIX)):
        if candidate in known:
            return candidate
    return None


def attribute(events: Iterable[Mapping[str, Any]], stage_of: Mapping[str, str], *, skip_runs: int = 1) -> StageTimes:
    """Sum ORT profiler kernel times per stage over the profiled runs after the first ``skip_runs``."""
    events = list(events)
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[skip_runs:]
    if not runs:
        raise ValueError("the profile has no model_run after the skipped warm-up runs")
    kernels = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith(KERNEL_SUFFIX)
                      and any(r["ts"] <= e["ts"] <= r["ts"] + r["dur"] for r in runs)), key=lambda e: e["ts"])
    totals: dict[str, float] = {}
    inserted = 0.0
    unresolved: set[str] = set()
    previous = OTHER
    for event in kernels:
        kernel = event["name"][: -len(KERNEL_SUFFIX)]
        exported = _exported_name(kernel, stage_of)
        if exported is None:
            unresolved.add(kernel)
            inserted += event["dur"]
            stage = previous
        else:
            stage = stage_of[exported]
        totals[stage] = totals.get(stage, 0.0) + event["dur"]
        previous = stage
    per_run = 1e3 * len(runs)  # µs summed over runs → ms per inference
    return StageTimes(ms={k: v / per_run for k, v in totals.items()}, inserted_ms=inserted / per_run,
                      run_ms=sum(r["dur"] for r in runs) / per_run, runs=len(runs), unresolved=sorted(unresolved))
