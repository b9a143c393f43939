"""Work counts: parameters, fvcore MACs (the paper's "FLOPs"), FlopCounterMode FLOPs, and bytes moved.

Units are named, never mixed (measurement.md §7): ``fvcore_gmacs`` counts one multiply-add as one (fvcore's own
convention, what RETHINED's Table 3 reports) and lists the ops it skipped; ``gflops`` counts 2 per multiply-add and
includes attention (torch ``FlopCounterMode``), on the meta device so 4096² needs no memory; ``bytes`` estimates
memory traffic as weights read once plus every non-view activation written once and read once. A model whose work
depends on its input (data-dependent shapes, e.g. RETHINED's compact upscaler, whose work follows the hole) cannot
run on the meta device: it is counted on the seeded inputs of its cell instead, and says so (``data_dependent``).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ..inputs import make_inputs


@dataclass
class WorkCounts:
    params: int
    fvcore_gmacs: float | None
    fvcore_skipped_ops: dict[str, int]
    gflops: float
    bytes: int
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    data_dependent: bool = False  # counted on the cell's seeded inputs: the work follows the input

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("meta").eval()


def _meta_inputs(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty(1, 3, height, width, device="meta"), torch.empty(1, 1, height, width, device="meta"))


class _BytesMode(TorchDispatchMode):
    """Sums the bytes of every op output that is not a view of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.activation_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info is not None for r in func._schema.returns):
            for tensor in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(tensor, torch.Tensor):
                    self.activation_bytes += tensor.numel() * tensor.element_size()
        return out


@dataclass
class _Run:
    """One counted forward: FLOPs and activation bytes, of the model and inputs counted."""

    flops: FlopCounterMode
    traffic: _BytesMode
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    data_dependent: bool


def _counted_run(model: nn.Module, height: int, width: int) -> _Run:
    """One forward counting FLOPs and bytes: on the meta device, or, for a model with data-dependent shapes (which
    the meta device cannot run), once on the seeded inputs."""
    flops, traffic = FlopCounterMode(display=False), _BytesMode()
    meta_model, inputs = _meta_copy(model), _meta_inputs(height, width)
    try:
        with flops, traffic, torch.no_grad():
            meta_model(*inputs)
        return _Run(flops, traffic, meta_model, inputs, False)
    except NotImplementedError:  # e.g. nonzero: "a correct data-independent implementation does not exist"
        pass
    flops, traffic, inputs = FlopCounterMode(display=False), _BytesMode(), make_inputs(height, width)
    with flops, traffic, torch.no_grad():  # fresh modes: the failed run left its module stack behind
        model.eval()(*inputs)
    return _Run(flops, traffic, model, inputs, True)


def _gflops(run: _Run) -> tuple[float, dict[str, float]]:
    per_module = run.flops.get_flop_counts()
    root = type(run.model).__name__
    stages = {name: sum(per_module.get(f"{root}.{name}", {}).values()) / 1e9
              for name, _ in run.model.named_children()}
    return run.flops.get_total_flops() / 1e9, {k: v for k, v in stages.items() if v}


def _bytes(run: _Run) -> int:
    params = list(run.model.parameters()) + list(run.model.buffers())
    weights = sum(t.numel() * t.element_size() for t in params)
    input_bytes = sum(t.numel() * t.element_size() for t in run.inputs)
    return int(weights + input_bytes + 2 * run.traffic.activation_bytes)


def flop_counter_gflops(model: nn.Module, height: int, width: int) -> tuple[float, dict[str, float], bool]:
    """Total GFLOPs (2 per MAC, attention included), GFLOPs per top-level child module, and whether the count
    depends on the input (see :func:`_counted_run`)."""
    run = _counted_run(model, height, width)
    return (*_gflops(run), run.data_dependent)


def bytes_moved(model: nn.Module, height: int, width: int) -> int:
    """Estimated memory traffic of one inference: weights + inputs read once, activations written and read once."""
    return _bytes(_counted_run(model, height, width))


def fvcore_macs(model: nn.Module, height: int, width: int) -> tuple[float, dict[str, int], dict[str, float]]:
    """fvcore's count in GMACs, the ops it skipped (name → occurrences), and GMACs per top-level child.

    fvcore traces a real forward pass, so this costs one inference at (height, width).
    """
    from fvcore.nn import FlopCountAnalysis

    image, mask = make_inputs(height, width)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model.eval(), (image, mask))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        total = analysis.total() / 1e9
        by_module = analysis.by_module()
        skipped = dict(sorted(analysis.unsupported_ops().items()))
    stages = {name: by_module.get(name, 0) / 1e9 for name, _ in model.named_children()}
    return total, skipped, {k: v for k, v in stages.items() if v}


def work_counts(model: nn.Module, height: int, width: int, *, fvcore: bool = True) -> WorkCounts:
    """All counts for one (model, resolution); ``stages`` holds fvcore GMACs and GFLOPs per top-level module."""
    run = _counted_run(model, height, width)
    gflops, flop_stages = _gflops(run)
    gmacs, skipped, mac_stages = fvcore_macs(model, height, width) if fvcore else (None, {}, {})
    stages = {name: {"gflops": flop_stages.get(name, 0.0), "fvcore_gmacs": mac_stages.get(name, 0.0)}
              for name in sorted(set(flop_stages) | set(mac_stages))}
    return WorkCounts(params=count_params(model), fvcore_gmacs=gmacs, fvcore_skipped_ops=skipped, gflops=gflops,
                      bytes=_bytes(run), stages=stages, data_dependent=run.data_dependent)
