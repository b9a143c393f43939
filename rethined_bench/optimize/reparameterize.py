"""Structural re-parameterisation: multi-branch train-time blocks collapse into one conv (MobileOne, RepVGG).

rbench's blocks implement ``reparameterize()`` (switch to the inference form, in place) and expose
``is_reparameterized``. Other code's blocks are recognised by the methods the field uses for the same switch
(``reparameterize()`` in timm and Apple's MobileOne, ``switch_to_deploy()`` in RepVGG and its descendants), each
called once; those implementations return early when already switched.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Reparameterizable(Protocol):
    is_reparameterized: bool

    def reparameterize(self) -> None: ...


SWITCH_METHODS = ("reparameterize", "switch_to_deploy")


def _switch(module: nn.Module) -> str | None:
    """The name of ``module``'s method that switches it to its inference form, if it has one."""
    return next((name for name in SWITCH_METHODS if callable(getattr(module, name, None))), None)


def reparameterize_model(model: nn.Module) -> int:
    """Switch every re-parameterisable block of ``model`` (in place), outermost first, each once; returns how many
    were switched. The model is walked again after each switch: a block's switch may replace its children."""
    switched: set[int] = set()
    while True:
        pending = next((m for m in model.modules() if id(m) not in switched and _switch(m)
                        and not getattr(m, "is_reparameterized", False)), None)
        if pending is None:
            return len(switched)
        switched.add(id(pending))
        getattr(pending, _switch(pending))()


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
