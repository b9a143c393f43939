"""BatchNorm folding: ``BN(conv(x))`` becomes one conv with a bias (W' = W·γ/σ, b' = β + (b − μ)·γ/σ)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def fold_bn_into_kernel(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into a conv kernel and bias; returns plain tensors (no grad)."""
    with torch.no_grad():
        w, b = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    return w.detach(), b.detach()


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a Conv or Linear inside an ``nn.Sequential``, in place.

    The BatchNorm is replaced by ``nn.Identity`` so indices (and therefore state_dict keys of the other layers) stay.
    """
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, layer), (bn_name, bn) in zip(children, children[1:]):
            if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not isinstance(layer, _FOLDABLE):
                continue
            _fold_pair(layer, bn)
            setattr(module, bn_name, nn.Identity())
    return model


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
