"""Deterministic synthetic inputs: a textured image and a realistic hole mask (rectangle + brush strokes).

Latency does not depend on pixel values and parity checks need no real photos (DESIGN.md), but a mask with both
large and thin holes exercises every masking path (hole patches, boundary patches, known patches).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def make_inputs(height: int, width: int, *, batch: int = 1, seed: int = 0, hole_fraction: float = 0.2
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(image, mask)``: image (B,3,H,W) float32 in [0,1]; mask (B,1,H,W) float32 in {0,1}, 1 = hole."""
    gen = torch.Generator().manual_seed(seed)
    image = _textured_image(batch, height, width, gen)
    mask = torch.stack([_mask(height, width, gen, hole_fraction) for _ in range(batch)])[:, None]
    return image, mask


def _textured_image(batch: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    yy = torch.linspace(0, 1, height)[:, None]
    xx = torch.linspace(0, 1, width)[None, :]
    channels = []
    for _ in range(batch * 3):
        fx, fy, phase = (torch.rand(3, generator=gen) * torch.tensor([12.0, 12.0, 6.28])).tolist()
        channels.append(0.5 + 0.25 * torch.sin(2 * math.pi * (fx * xx + fy * yy) + phase))
    image = torch.stack(channels).reshape(batch, 3, height, width)
    image = image + 0.15 * torch.rand(batch, 3, height, width, generator=gen)
    return image.clamp(0, 1)


def _mask(height: int, width: int, gen: torch.Generator, hole_fraction: float) -> torch.Tensor:
    mask = torch.zeros(height, width)
    side = math.sqrt(hole_fraction * 0.6)
    rh, rw = int(height * side), int(width * side)
    top = int(torch.randint(0, height - rh + 1, (1,), generator=gen))
    left = int(torch.randint(0, width - rw + 1, (1,), generator=gen))
    mask[top:top + rh, left:left + rw] = 1.0
    # brush strokes: thick random walks until the hole fraction is reached
    radius = max(2, min(height, width) // 64)
    yy = torch.arange(height)[:, None]
    xx = torch.arange(width)[None, :]
    y, x = float(torch.rand(1, generator=gen)) * height, float(torch.rand(1, generator=gen)) * width
    for _ in range(400):
        if mask.mean() >= hole_fraction:
            break
        angle = float(torch.rand(1, generator=gen)) * 2 * math.pi
        step = min(height, width) / 24
        y = min(max(y + step * math.sin(angle), 0), height - 1)
        x = min(max(x + step * math.cos(angle), 0), width - 1)
        y0, y1 = max(int(y) - radius, 0), min(int(y) + radius + 1, height)
        x0, x1 = max(int(x) - radius, 0), min(int(x) + radius + 1, width)
        disk = ((yy[y0:y1] - y) ** 2 + (xx[:, x0:x1] - x) ** 2) <= radius**2
        mask[y0:y1, x0:x1] = torch.maximum(mask[y0:y1, x0:x1], disk.float())
    return mask


def inputs_for(manifest: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """The inputs an artifact is run with, by its manifest: rbench's own exports get :func:`make_inputs`; a file
    rbench did not export (``plain``) gets, per input, a binary hole mask when its name says mask and seeded values
    in [0, 1] otherwise, in the input's shape and dtype (integer inputs: zeros)."""
    if "plain" not in manifest:
        image, mask = make_inputs(*manifest["resolution"], seed=seed)
        return {"image": image.numpy(), "mask": mask.numpy()}
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    inputs = {}
    for spec in manifest["inputs"]:
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        if "mask" in spec["name"].lower() and len(shape) >= 2:
            values = np.broadcast_to(_mask(shape[-2], shape[-1], gen, 0.2).numpy(), shape)
        elif np.issubdtype(dtype, np.floating):
            values = rng.random(shape)
        else:
            values = np.zeros(shape)
        inputs[spec["name"]] = np.ascontiguousarray(values, dtype=dtype)
    return inputs
