"""BatchNorm folding: ``BN(conv(x))`` becomes one conv with a bias (W' = W·γ/σ, b' = β + (b − μ)·γ/σ).

Pairs are found two ways, so that any model's are, not only rbench's own blocks: by module structure (a BatchNorm
right after a Conv/Linear in an ``nn.Sequential``) and by graph (``torch.fx``'s trace of the model, where a
BatchNorm module reads the output of a Conv/Linear module that nothing else reads, each called once). A model that
does not trace (data-dependent control flow) keeps its structural folds and says so (``deploy_check``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def fold_bn_into_kernel(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into a conv kernel and bias; returns plain tensors (no grad)."""
    with torch.no_grad():
        w, b = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    return w.detach(), b.detach()


def fuse_batchnorm(model: nn.Module) -> dict[str, Any]:
    """Fold every BatchNorm that follows a Conv or Linear, in place; returns how many were folded and how.

    The BatchNorm is replaced by ``nn.Identity`` so indices (and therefore state_dict keys of the other layers) stay.
    """
    structural = _fuse_in_sequentials(model)
    by_graph = _fuse_by_graph(model)
    return {"structural": structural, "graph": by_graph if isinstance(by_graph, int) else 0,
            "graph_trace": "ok" if isinstance(by_graph, int) else by_graph}


def _fuse_in_sequentials(model: nn.Module) -> int:
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, layer), (bn_name, bn) in zip(children, children[1:]):
            if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not isinstance(layer, _FOLDABLE):
                continue
            _fold_pair(layer, bn)
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded


def _fuse_by_graph(model: nn.Module) -> int | str:
    """Fold the pairs ``torch.fx`` finds in the traced forward; the reason as text when the model does not trace."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # tracing user code raises whatever that code raises on proxies
        return f"not traceable ({type(exc).__name__}): structural folds only"
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    folded = 0
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and len(node.args) == 1 else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        bn, layer = model.get_submodule(node.target), model.get_submodule(source.target)
        if (isinstance(bn, nn.modules.batchnorm._BatchNorm) and isinstance(layer, _FOLDABLE)
                and calls[node.target] == calls[source.target] == 1):
            _fold_pair(layer, bn)
            parent, _, name = node.target.rpartition(".")
            setattr(model.get_submodule(parent), name, nn.Identity())
            folded += 1
    return folded


def _fold_pair(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            w, b = fuse_linear_bn_weights(
                layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
        else:
            w, b = fuse_conv_bn_weights(
                layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
    layer.weight = nn.Parameter(w.detach())
    layer.bias = nn.Parameter(b.detach())
