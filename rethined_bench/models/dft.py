"""The 2-D real FFT at a fixed size as constant matrix multiplies (``reference/models.md`` §5, "Matmul-DFT").

``torch.fft.rfftn``/``irfftn`` export to ONNX only as ``DFT`` (opset ≥ 17 via dynamo), which ONNX Runtime's CUDA EP,
TensorRT and QNN cannot run. At a size fixed per export the transform is a handful of small matmuls against
constant cosine/sine matrices, which every backend runs. Used by CoordFill's FourierUnit (always 32×32) and meant
for LaMa's (fixed per export).

With ``s = 1/√(HW)`` (``norm="ortho"``), ``C_W, S_W`` of shape (W, W/2+1) and ``C_H, S_H`` of shape (H, H):

- forward: ``a = x·C_W``, ``b = −x·S_W``; ``Re = s(C_H·a + S_H·b)``, ``Im = s(C_H·b − S_H·a)``;
- inverse: ``a' = C_H·Re − S_H·Im``, ``b' = C_H·Im + S_H·Re``, ``x = s(a'·(c∘C_W)ᵀ − b'·(c∘S_W)ᵀ)`` with
  ``c_l = 1`` at ``l = 0`` and ``l = W/2`` (even W), else 2. The sine rows of those two columns are zero, so the
  imaginary parts there are ignored, exactly as ``irfftn`` (C2R) does for a non-Hermitian spectrum.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _cos_sin(n_out: int, n_in: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_out, n_in) tables of cos/sin(2π·i·j/length), in float64 (integer phase reduced mod length first)."""
    i = torch.arange(n_out, dtype=torch.int64)[:, None]
    j = torch.arange(n_in, dtype=torch.int64)[None, :]
    phase = (i * j % length).double() * (2 * math.pi / length)
    return torch.cos(phase), torch.sin(phase)


class RealDFT2d(nn.Module):
    """``rfftn``/``irfftn`` with ``norm="ortho"`` over the last two dims of a fixed (height, width).

    The tables are non-persistent buffers (not in any state_dict) computed in float64 and stored in float32.
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width
        bins = width // 2 + 1
        scale = 1.0 / math.sqrt(height * width)
        cos_h, sin_h = _cos_sin(height, height, height)  # symmetric
        cos_w, sin_w = _cos_sin(width, bins, width)  # (W, bins)
        weight = torch.full((bins, 1), 2.0, dtype=torch.float64)  # Hermitian weights c_l of the C2R transform
        weight[0] = 1.0
        if width % 2 == 0:
            weight[-1] = 1.0
        tables = {
            "cos_h": cos_h, "sin_h": sin_h,
            "cos_w": cos_w * scale, "msin_w": -sin_w * scale,  # forward: ortho scale and the sign of b folded in
            "icos_w": weight * cos_w.T * scale, "isin_w": weight * sin_w.T * scale,  # inverse (bins, W)
        }
        for name, table in tables.items():
            self.register_buffer(name, table.float(), persistent=False)

    def _check(self, size: tuple[int, int]) -> None:
        if tuple(size) != (self.height, self.width):
            raise ValueError(f"RealDFT2d is fixed at {self.height}x{self.width}, got {tuple(size)}")

    def rfft2(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(…, H, W) real → (real, imag), each (…, H, W/2+1): ``torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")``."""
        self._check(x.shape[-2:])
        a = x @ self.cos_w
        b = x @ self.msin_w
        return self.cos_h @ a + self.sin_h @ b, self.cos_h @ b - self.sin_h @ a

    def irfft2(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """(real, imag) (…, H, W/2+1) → (…, H, W): ``torch.fft.irfftn(complex, s=(H, W), norm="ortho")``."""
        bins = self.width // 2 + 1
        if tuple(real.shape[-2:]) != (self.height, bins):
            raise ValueError(f"RealDFT2d expects a ({self.height}, {bins}) spectrum, got {tuple(real.shape[-2:])}")
        a = self.cos_h @ real - self.sin_h @ imag
        b = self.cos_h @ imag + self.sin_h @ real
        return a @ self.icos_w - b @ self.isin_w
