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
    """Known pixels from ``image``, hole pixels (mask > 0.5) from ``filled`` clamped to [0,1].

    A select, not ``image·(1−m) + filled·m``: one pass over the image instead of four at 4096², equal for a binary
    mask, and a hole pixel's content (NaN included) cannot reach a known pixel through a multiply by zero.
    """
    return torch.where(mask > 0.5, filled.clamp(0.0, 1.0), image)
