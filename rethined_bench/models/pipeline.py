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
    the model cannot take) and composites the known pixels back, so every model preserves them exactly. A model that
    can keep the known pixels exactly for less than a full-resolution select (one that writes only its hole patches)
    overrides :meth:`inpaint_composited` instead.
    """

    constraint: ResolutionConstraint

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        self.constraint.check(int(height), int(width))
        if mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"mask {tuple(mask.shape)} and image {tuple(image.shape)} differ in size")
        return self.inpaint_composited(image, mask)

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inpaint_composited(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:meth:`inpaint`'s result with the known pixels put back (:func:`composite`)."""
        return composite(image, self.inpaint(image, mask), mask)


def composite(image: torch.Tensor, filled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Known pixels from ``image``, hole pixels (mask > 0.5) from ``filled`` clamped to [0,1]."""
    return select(hole_of(mask), filled.clamp(0.0, 1.0), image)


def hole_of(mask: torch.Tensor) -> torch.Tensor:
    """The binary hole map (1.0 where mask > 0.5) of a (B,1,H,W) mask."""
    return (mask > 0.5).to(mask.dtype)


def select(hole: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor, *, expand: bool = True) -> torch.Tensor:
    """``inside`` where ``hole`` is 1, ``outside`` where it is 0; ``hole`` (B,1,H,W) binary, images (B,C,H,W).

    Arithmetic, on the map expanded to the images' channels: at 4096² ONNX Runtime's ``Where`` and its broadcasting
    multiplies each take several times a plain elementwise pass (``expand=False`` broadcasts it instead, which is
    the cheaper layout for a batch of small patches). Exact for finite values: a pixel takes one side times 1 plus
    the other times 0, so the other side (a hole's content, for the known pixels) never shows.
    """
    if expand:
        hole = hole.expand_as(inside)
    return inside * hole + outside * (1.0 - hole)
