"""Deterministic synthetic inputs: a textured image and a realistic hole mask (rectangle + brush strokes).

Latency does not depend on pixel values and parity checks need no real photos (DESIGN.md), but a mask with both
large and thin holes exercises every masking path (hole patches, boundary patches, known patches).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def make_inputs(height: int, width: int, *, batch: int = 1, seed: int = 0, hole_fraction: float = 0.2
                ) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Return ``(image, mask)``: image (B,3,H,W) float32 in [0,1]; mask (B,1,H,W) float32 in {0,1}, 1 = hole."""
    import torch

    image, mask = make_arrays(height, width, batch=batch, seed=seed, hole_fraction=hole_fraction)
    return torch.from_numpy(image), torch.from_numpy(mask)


def make_arrays(height: int, width: int, *, batch: int = 1, seed: int = 0, hole_fraction: float = 0.2
                ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`make_inputs` as numpy arrays, without importing torch (the measuring worker processes start faster)."""
    rng = np.random.default_rng(seed)
    image = _textured_image(batch, height, width, rng)
    mask = np.stack([_mask(height, width, rng, hole_fraction) for _ in range(batch)])[:, None]
    return image, mask


def _textured_image(batch: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    channels = []
    for _ in range(batch * 3):
        fx, fy, phase = rng.random(3) * np.array([12.0, 12.0, 6.28])
        channels.append(0.5 + 0.25 * np.sin(2 * math.pi * (fx * xx + fy * yy) + phase))
    image = np.stack(channels).reshape(batch, 3, height, width)
    image = image + 0.15 * rng.random((batch, 3, height, width), dtype=np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


def _mask(height: int, width: int, rng: np.random.Generator, hole_fraction: float) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.float32)
    side = math.sqrt(hole_fraction * 0.6)
    rh, rw = int(height * side), int(width * side)
    top, left = int(rng.integers(0, height - rh + 1)), int(rng.integers(0, width - rw + 1))
    mask[top:top + rh, left:left + rw] = 1.0
    # brush strokes: thick random walks until the hole fraction is reached
    radius = max(2, min(height, width) // 64)
    yy = np.arange(height)[:, None]
    xx = np.arange(width)[None, :]
    y, x = rng.random() * height, rng.random() * width
    for _ in range(400):
        if mask.mean() >= hole_fraction:
            break
        angle = rng.random() * 2 * math.pi
        step = min(height, width) / 24
        y = min(max(y + step * math.sin(angle), 0), height - 1)
        x = min(max(x + step * math.cos(angle), 0), width - 1)
        y0, y1 = max(int(y) - radius, 0), min(int(y) + radius + 1, height)
        x0, x1 = max(int(x) - radius, 0), min(int(x) + radius + 1, width)
        disk = ((yy[y0:y1] - y) ** 2 + (xx[:, x0:x1] - x) ** 2) <= radius**2
        mask[y0:y1, x0:x1] = np.maximum(mask[y0:y1, x0:x1], disk.astype(np.float32))
    return mask


def inputs_for(manifest: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """The inputs an artifact is run with, by its manifest: rbench's own exports get :func:`make_inputs`; a file
    rbench did not export (``plain``) gets, per input, a binary hole mask when its name says mask and seeded values
    in [0, 1] otherwise, in the input's shape and dtype (integer inputs: zeros)."""
    if "plain" not in manifest:
        image, mask = make_arrays(*manifest["resolution"], seed=seed)
        return {"image": image, "mask": mask}
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in manifest["inputs"]:
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        if "mask" in spec["name"].lower() and len(shape) >= 2:
            values = np.broadcast_to(_mask(shape[-2], shape[-1], rng, 0.2), shape)
        elif np.issubdtype(dtype, np.floating):
            values = rng.random(shape)
        else:
            values = np.zeros(shape)
        inputs[spec["name"]] = np.ascontiguousarray(values, dtype=dtype)
    return inputs
