"""Structural re-parameterisation: multi-branch train-time blocks collapse into one conv (MobileOne, RepVGG).

A block opts in by implementing ``reparameterize()`` (switch itself to the inference form, in place) and exposing
``is_reparameterized``; :func:`reparameterize_model` walks the model and calls it on every such block.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Reparameterizable(Protocol):
    is_reparameterized: bool

    def reparameterize(self) -> None: ...


def reparameterize_model(model: nn.Module) -> nn.Module:
    """Call ``reparameterize()`` on every re-parameterisable block of ``model`` (in place); returns ``model``."""
    for module in list(model.modules()):
        if isinstance(module, Reparameterizable) and not module.is_reparameterized:
            module.reparameterize()
    return model


def pad_kernel_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a (O, I, k, k) kernel, centred, to (O, I, size, size): a 1x1 scale branch becomes a k×k kernel."""
    pad = (size - kernel.shape[-1]) // 2
    return nn.functional.pad(kernel, [pad, pad, pad, pad])


def identity_kernel(channels: int, groups: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """The k×k grouped-conv kernel that maps x to x: ``K[i, i mod (C/g), k//2, k//2] = 1``."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, size, size, dtype=like.dtype, device=like.device)
    index = torch.arange(channels)
    kernel[index, index % per_group, size // 2, size // 2] = 1.0
    return kernel
