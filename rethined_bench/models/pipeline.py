"""The pipeline contract every model keeps (DESIGN.md, "One pipeline contract for every model")."""

from __future__ import annotations

import torch
from torch import nn

from .registry import ResolutionConstraint

INPUT_NAMES = ("image", "mask")
OUTPUT_NAMES = ("inpainted",)


class InpaintingPipeline(nn.Module):
    """Base class: ``forward(image, mask) -> image``; image (B,3,H,W) in [0,1], mask (B,1,H,W), 1 = hole.

    Subclasses implement :meth:`inpaint` and set :attr:`constraint`; the base checks shapes (a clear error for sizes
    the model cannot take) and composites the known pixels back, so every model preserves them exactly.
    """

    constraint: ResolutionConstraint

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        self.constraint.check(int(height), int(width))
        if mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"mask {tuple(mask.shape)} and image {tuple(image.shape)} differ in size")
        filled = self.inpaint(image, mask)
        return composite(image, filled, mask)

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def composite(image: torch.Tensor, filled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Known pixels from ``image``, hole pixels from ``filled`` clamped to [0,1]; exact for mask in {0,1}."""
    return image * (1.0 - mask) + filled.clamp(0.0, 1.0) * mask
