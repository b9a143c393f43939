"""The 2-D real FFT as constant matrix multiplies (``reference/models.md`` §5, "Matmul-DFT").

``torch.fft.rfftn``/``irfftn`` export to ONNX only as ``DFT`` (opset ≥ 17 via dynamo), which ONNX Runtime's CUDA EP,
TensorRT and QNN cannot run. At a size fixed per export the transform is a handful of small matmuls against
constant cosine/sine matrices, which every backend runs. Used by the FourierUnit of CoordFill (always 32×32) and of
LaMa (H/8 × W/8: whatever the export's size gives): :func:`rfft2`/:func:`irfft2` take the tables for the input's
size from a per-size cache of numpy arrays (:func:`dft_tables`) and wrap them at each call, so that a trace or an
export (jit, ``torch.export``, fake or meta tensors) sees plain constants and never caches one of its own tensors.
:class:`RealDFT2d` is the same transform at one fixed size with the tables as (non-persistent) buffers.

With ``s = 1/√(HW)`` (``norm="ortho"``), ``C_W, S_W`` of shape (W, W/2+1) and ``C_H, S_H`` of shape (H, H):

- forward: ``a = x·C_W``, ``b = −x·S_W``; ``Re = s(C_H·a + S_H·b)``, ``Im = s(C_H·b − S_H·a)``;
- inverse: ``a' = C_H·Re − S_H·Im``, ``b' = C_H·Im + S_H·Re``, ``x = s(a'·(c∘C_W)ᵀ − b'·(c∘S_W)ᵀ)`` with
  ``c_l = 1`` at ``l = 0`` and ``l = W/2`` (even W), else 2. The sine rows of those two columns are zero, so the
  imaginary parts there are ignored, exactly as ``irfftn`` (C2R) does for a non-Hermitian spectrum.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

FORWARD_TABLES = ("cos_h", "sin_h", "cos_w", "msin_w")
INVERSE_TABLES = ("cos_h", "sin_h", "icos_w", "isin_w")


def _cos_sin(n_out: int, n_in: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_out, n_in) tables of cos/sin(2π·i·j/length), in float64 (integer phase reduced mod length first)."""
    phase = (np.arange(n_out)[:, None] * np.arange(n_in)[None, :] % length) * (2 * math.pi / length)
    return np.cos(phase), np.sin(phase)


@lru_cache(maxsize=64)
def dft_tables(height: int, width: int) -> dict[str, np.ndarray]:
    """The float32 matrices of the ortho 2-D real DFT at (height, width), computed in float64 and cached per size
    (64² at LaMa-512's bottleneck: 66 KB; 512² at 4096: 4 MB). Treat them as read-only."""
    bins = width // 2 + 1
    scale = 1.0 / math.sqrt(height * width)
    cos_h, sin_h = _cos_sin(height, height, height)  # symmetric
    cos_w, sin_w = _cos_sin(width, bins, width)  # (W, bins)
    weight = np.full((bins, 1), 2.0)  # Hermitian weights c_l of the C2R transform
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0
    tables = {
        "cos_h": cos_h, "sin_h": sin_h,
        "cos_w": cos_w * scale, "msin_w": -sin_w * scale,  # forward: ortho scale and the sign of b folded in
        "icos_w": weight * cos_w.T * scale, "isin_w": weight * sin_w.T * scale,  # inverse (bins, W)
    }
    return {name: np.ascontiguousarray(table, dtype=np.float32) for name, table in tables.items()}


def _constants(height: int, width: int, names: tuple[str, ...], like: torch.Tensor) -> list[torch.Tensor]:
    tables = dft_tables(height, width)
    return [torch.from_numpy(tables[name]).to(device=like.device, dtype=like.dtype) for name in names]


def _forward(x: torch.Tensor, cos_h: torch.Tensor, sin_h: torch.Tensor, cos_w: torch.Tensor,
             msin_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = x @ cos_w
    b = x @ msin_w
    return cos_h @ a + sin_h @ b, cos_h @ b - sin_h @ a


def _inverse(real: torch.Tensor, imag: torch.Tensor, cos_h: torch.Tensor, sin_h: torch.Tensor,
             icos_w: torch.Tensor, isin_w: torch.Tensor) -> torch.Tensor:
    a = cos_h @ real - sin_h @ imag
    b = cos_h @ imag + sin_h @ real
    return a @ icos_w - b @ isin_w


def rfft2(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, H, W) real → (real, imag), each (…, H, W/2+1): ``torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")``."""
    height, width = (int(n) for n in x.shape[-2:])
    return _forward(x, *_constants(height, width, FORWARD_TABLES, x))


def irfft2(real: torch.Tensor, imag: torch.Tensor, width: int) -> torch.Tensor:
    """(real, imag) (…, H, W/2+1) → (…, H, W): ``torch.fft.irfftn(complex, s=(H, W), norm="ortho")``."""
    height, bins = (int(n) for n in real.shape[-2:])
    if bins != width // 2 + 1:
        raise ValueError(f"a width-{width} inverse needs {width // 2 + 1} frequency bins, got {bins}")
    return _inverse(real, imag, *_constants(height, width, INVERSE_TABLES, real))


class RealDFT2d(nn.Module):
    """:func:`rfft2`/:func:`irfft2` at one fixed (height, width), the tables held as non-persistent buffers (they
    move with the module and stay out of any state_dict)."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width
        for name, table in dft_tables(height, width).items():
            self.register_buffer(name, torch.tensor(table), persistent=False)

    def _check(self, size: tuple[int, int]) -> None:
        if tuple(size) != (self.height, self.width):
            raise ValueError(f"RealDFT2d is fixed at {self.height}x{self.width}, got {tuple(size)}")

    def rfft2(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`rfft2` at the fixed size."""
        self._check(x.shape[-2:])
        return _forward(x, *(getattr(self, name) for name in FORWARD_TABLES))

    def irfft2(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """:func:`irfft2` at the fixed size."""
        self._check((real.shape[-2], self.width))
        if real.shape[-1] != self.width // 2 + 1:
            raise ValueError(f"RealDFT2d expects a ({self.height}, {self.width // 2 + 1}) spectrum, "
                             f"got {tuple(real.shape[-2:])}")
        return _inverse(real, imag, *(getattr(self, name) for name in INVERSE_TABLES))
