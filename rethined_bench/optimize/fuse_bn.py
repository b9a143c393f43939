"""BatchNorm folding: ``BN(conv(x))`` becomes one conv with a bias (W' = W·γ/σ, b' = β + (b − μ)·γ/σ).

Pairs are found two ways, so that any model's are, not only rbench's own blocks: by module structure (a BatchNorm
right after a Conv/Linear in an ``nn.Sequential``) and by graph (``torch.fx``'s trace of the model, where a
BatchNorm module reads the output of a Conv/Linear module that nothing else reads, each called once). A module that
does not trace (a size check on a Python int, data-dependent control flow) is traced child by child instead, so it
hides only its own forward's pairs; ``deploy_check`` names the modules that did not trace.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


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
    by_graph, untraced = _fuse_by_graph(model)
    named = [f"{name.rstrip('.') or type(model).__name__} ({error})" for name, error in untraced]
    trace = "ok" if not named else ("children traced instead of " + ", ".join(named[:3])
                                    + (f" and {len(named) - 3} more" if len(named) > 3 else ""))
    return {"structural": structural, "graph": by_graph, "graph_trace": trace}


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


def _fuse_by_graph(module: nn.Module, prefix: str = "") -> tuple[int, list[tuple[str, str]]]:
    """Fold the pairs ``torch.fx`` finds in ``module``'s traced forward, or, where it does not trace, in each
    child's; returns the count and the (name, error type) of the modules that did not trace."""
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception as exc:  # tracing user code raises whatever that code raises on proxies
        untraced = [(prefix, type(exc).__name__)]
        folded = 0
        for name, child in module.named_children():
            if any(isinstance(m, _FOLDABLE) for m in child.modules()):
                count, below = _fuse_by_graph(child, f"{prefix}{name}.")
                folded, untraced = folded + count, untraced + below
        return folded, untraced
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    folded = 0
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and len(node.args) == 1 else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        bn, layer = module.get_submodule(node.target), module.get_submodule(source.target)
        if (isinstance(bn, nn.modules.batchnorm._BatchNorm) and isinstance(layer, _FOLDABLE)
                and calls[node.target] == calls[source.target] == 1):
            _fold_pair(layer, bn)
            parent, _, name = node.target.rpartition(".")
            setattr(module.get_submodule(parent), name, nn.Identity())
            folded += 1
    return folded, []


def _fold_pair(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            w, b = fuse_linear_bn_weights(
                layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
        elif isinstance(layer, nn.modules.conv._ConvTransposeNd):
            w, b = _fuse_transposed(layer, bn)
        else:
            w, b = fuse_conv_bn_weights(
                layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
    layer.weight = nn.Parameter(w.detach())
    layer.bias = nn.Parameter(b.detach())


def _fuse_transposed(layer: nn.modules.conv._ConvTransposeNd, bn: nn.modules.batchnorm._BatchNorm
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold into a transposed conv, whose weight is (in, out/groups, k…): output channel ``g·out/groups + j`` is
    column ``j`` of group ``g``'s rows, so the weight is regrouped to (in/groups, out, k…) for the per-output scale."""
    groups = layer.groups
    weight = layer.weight.unflatten(0, (groups, -1)).transpose(0, 1).flatten(1, 2)
    w, b = fuse_conv_bn_weights(weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias,
                                transpose=True)
    return w.unflatten(1, (groups, -1)).transpose(0, 1).flatten(0, 1).contiguous(), b
