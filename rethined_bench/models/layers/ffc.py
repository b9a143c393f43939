"""Fast Fourier convolution (Chi et al., NeurIPS 2020) as LaMa and CoordFill use it (``reference/models.md`` §4–5).

A feature map is a (local, global) pair of channel groups. :class:`FFC` mixes them with four paths — three k×k
convs (``l→l``, ``l→g``, ``g→l``) and a :class:`SpectralTransform` (``g→g``) whose :class:`FourierUnit` applies a
1×1 conv to the image's 2-D real spectrum, so one layer sees the whole image. :class:`FFCLayer` (the official
``FFC_BN_ACT``) adds a norm and an activation per stream. Names and parameter order are the official ones
(``advimman/lama:saicinpainting/training/modules/ffc.py``), so checkpoints load strictly.

Options that separate the users:

- ``fft``: ``"torch"`` is ``torch.fft.rfftn``/``irfftn`` (the reference; Core ML lowers it itself); ``"matmul"`` is
  the same transform as constant matmuls at the size the layer sees (:mod:`.dft`), for ONNX, TensorRT and QNN;
- ``norm``: ``"batch"`` (LaMa: a BatchNorm after each stream's sum, after the spectral conv and in the spectral
  transform's input conv), ``"unused"`` (CoordFill: the official code constructs the layer's and the FourierUnit's
  BatchNorms and never calls them: state-only stand-ins keep the checkpoint layout; no norm in the spectral
  transform) or ``"none"`` (no norm anywhere);
- channel split by ``ratio_gin``/``ratio_gout`` as the official code: ``global = int(channels · ratio)``.

With ``norm="batch"`` a stream's BatchNorm follows a *sum* of convs, which the generic Conv→BN folding pass cannot
pair, so :meth:`FFCLayer.reparameterize` (and :meth:`FourierUnit.reparameterize`, for symmetry) fold them exactly;
the spectral transform's ``conv1`` Conv→BN pair is a plain ``nn.Sequential`` the generic pass folds. Not reproduced: the
local Fourier unit (``enable_lfu``), gates, groups and stride-2 spectral transforms, which no released LaMa or
CoordFill configuration uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dft import irfft2, rfft2

FFT_MODES = ("matmul", "torch")
NORMS = ("batch", "unused", "none")
ACTIVATIONS = {"relu": F.relu, "sigmoid": torch.sigmoid}


def split_channels(channels: int, ratio_global: float) -> tuple[int, int]:
    """(local, global) channel counts as the official FFC splits them: ``global = int(channels · ratio)``."""
    global_ = int(channels * ratio_global)
    return channels - global_, global_


class UnusedBatchNorm(nn.Module):
    """State-only stand-in for a ``BatchNorm2d`` that the official code constructs and never calls.

    It carries the same state_dict entries in the same order (weight, bias, running_mean, running_var,
    num_batches_tracked) so released checkpoints load strictly, and its parameters count in the official total.
    It has no forward: nothing could call it by mistake, and deploy-time BatchNorm folding has nothing to fold.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))


def _check_options(fft: str, norm: str) -> None:
    if fft not in FFT_MODES:
        raise ValueError(f"fft must be one of {FFT_MODES}, not {fft!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")


def _stream_norm(norm: str, channels: int) -> nn.Module | None:
    """The norm of one output stream (``None`` where the stream is empty or there is no norm)."""
    if not channels or norm == "none":
        return None
    return nn.BatchNorm2d(channels) if norm == "batch" else UnusedBatchNorm(channels)


def fold_batchnorm_into_sum(convs: list[nn.Conv2d], bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold an eval-mode ``bn(Σ conv_i(x_i))`` into the convs, in place: every kernel scaled by ``s = γ/σ``, the
    shift ``β + (Σ b_i − μ)·s`` carried by the first conv's bias."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        for conv in convs:
            if conv.bias is not None:
                shift = shift + conv.bias * scale
            conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1))
            conv.bias = None
        convs[0].bias = nn.Parameter(shift.clone())


class FourierUnit(nn.Module):
    """Global branch of the spectral transform: ``rfftn`` (ortho) → real/imag interleaved per channel (2c = real,
    2c+1 = imag) → 1×1 conv → norm → ReLU → ``irfftn`` back to the input's size."""

    def __init__(self, channels: int, fft: str = "matmul", norm: str = "batch") -> None:
        super().__init__()
        _check_options(fft, norm)
        self.fft, self.norm = fft, norm
        self.conv_layer = nn.Conv2d(2 * channels, 2 * channels, 1, bias=False)
        if norm != "none":
            self.bn = nn.BatchNorm2d(2 * channels) if norm == "batch" else UnusedBatchNorm(2 * channels)
        self.is_reparameterized = norm != "batch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if self.fft == "matmul":
            real, imag = rfft2(x)
        else:
            spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
            real, imag = spectrum.real, spectrum.imag
        y = self.conv_layer(torch.stack([real, imag], dim=2).reshape(batch, 2 * channels, height, -1))
        if self.norm == "batch":
            y = self.bn(y)
        y = F.relu(y).reshape(batch, channels, 2, height, -1)
        real, imag = y[:, :, 0], y[:, :, 1]
        if self.fft == "matmul":
            return irfft2(real, imag, int(width))
        return torch.fft.irfftn(torch.complex(real, imag), s=(height, width), dim=(-2, -1), norm="ortho")

    def reparameterize(self) -> None:
        """Fold the spectral BatchNorm into ``conv_layer`` (``norm="batch"``; the others have nothing to fold)."""
        if self.is_reparameterized:
            return
        fold_batchnorm_into_sum([self.conv_layer], self.bn)
        self.bn = nn.Identity()
        self.is_reparameterized = True


class SpectralTransform(nn.Module):
    """``y = ReLU(norm(1×1 conv(x)))``; ``1×1 conv(y + FU(y))`` (stride 1, no local Fourier unit)."""

    def __init__(self, in_ch: int, out_ch: int, fft: str = "matmul", norm: str = "batch") -> None:
        super().__init__()
        hidden = out_ch // 2
        conv1 = [nn.Conv2d(in_ch, hidden, 1, bias=False)]
        if norm == "batch":
            conv1.append(nn.BatchNorm2d(hidden))
        self.conv1 = nn.Sequential(*conv1, nn.ReLU())
        self.fu = FourierUnit(hidden, fft, norm)
        self.conv2 = nn.Conv2d(hidden, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        return self.conv2(y + self.fu(y))


def _apply(module: nn.Module | None, x: torch.Tensor | None) -> torch.Tensor | None:
    return None if module is None or x is None else module(x)


def _sum(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return a if b is None else b
    return a + b


class FFC(nn.Module):
    """Fast Fourier convolution on a (local, global) pair: ``out_l = l→l + g→l``, ``out_g = l→g + ST(g)``.

    Only the paths whose input and output streams are both non-empty exist (the official code puts parameter-free
    ``Identity`` modules in the others); an absent stream is ``None``. The k×k convs are bias-free with reflect
    padding, as in the official code.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, dilation: int = 1, fft: str = "matmul",
                 norm: str = "batch") -> None:
        super().__init__()
        in_l, in_g = split_channels(in_channels, ratio_gin)
        out_l, out_g = split_channels(out_channels, ratio_gout)

        def conv(cin: int, cout: int) -> nn.Conv2d | None:
            return nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=False,
                             padding_mode="reflect") if cin and cout else None

        self.convl2l = conv(in_l, out_l)
        self.convl2g = conv(in_l, out_g)
        self.convg2l = conv(in_g, out_l)
        if in_g and out_g and stride != 1:
            raise ValueError("stride-2 spectral transforms are not implemented (no released model uses them)")
        self.convg2g = SpectralTransform(in_g, out_g, fft, norm) if in_g and out_g else None

    def forward(self, x_l: torch.Tensor | None, x_g: torch.Tensor | None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        out_l = _sum(_apply(self.convl2l, x_l), _apply(self.convg2l, x_g))
        out_g = _sum(_apply(self.convl2g, x_l), _apply(self.convg2g, x_g))
        return out_l, out_g

    def stream_convs(self) -> tuple[list[nn.Conv2d], list[nn.Conv2d]]:
        """The convs whose outputs sum into each stream (local, global): the last linear op before the norm."""
        local = [c for c in (self.convl2l, self.convg2l) if c is not None]
        spectral = None if self.convg2g is None else self.convg2g.conv2
        global_ = [c for c in (self.convl2g, spectral) if c is not None]
        return local, global_


class FFCLayer(nn.Module):
    """The official ``FFC_BN_ACT``: an :class:`FFC`, then norm and activation on each non-empty stream.

    ``forward(x_l, x_g=None)`` returns ``(out_l, out_g)``, ``None`` for an empty stream. With ``norm="unused"`` the
    ``bn_l``/``bn_g`` exist for the checkpoint only (CoordFill's forward skips them).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, ratio_gin: float = 0.0,
                 ratio_gout: float = 0.0, stride: int = 1, padding: int = 0, dilation: int = 1,
                 activation: str = "relu", fft: str = "matmul", norm: str = "batch") -> None:
        super().__init__()
        _check_options(fft, norm)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, not {activation!r}")
        self.ffc = FFC(in_channels, out_channels, kernel, ratio_gin, ratio_gout, stride, padding, dilation, fft,
                       norm)
        out_l, out_g = split_channels(out_channels, ratio_gout)
        self.bn_l = _stream_norm(norm, out_l)
        self.bn_g = _stream_norm(norm, out_g)
        self.norm = norm
        self.activation = activation
        self.is_reparameterized = norm != "batch"

    def forward(self, x_l: torch.Tensor | None, x_g: torch.Tensor | None = None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        out_l, out_g = self.ffc(x_l, x_g)
        if self.norm == "batch":
            out_l, out_g = _apply(self.bn_l, out_l), _apply(self.bn_g, out_g)
        act = ACTIVATIONS[self.activation]
        return (None if out_l is None else act(out_l)), (None if out_g is None else act(out_g))

    def reparameterize(self) -> None:
        """Fold ``bn_l``/``bn_g`` into the convs that sum into each stream (``norm="batch"``), in place."""
        if self.is_reparameterized:
            return
        local, global_ = self.ffc.stream_convs()
        for name, convs in (("bn_l", local), ("bn_g", global_)):
            if getattr(self, name) is not None:
                fold_batchnorm_into_sum(convs, getattr(self, name))
                setattr(self, name, nn.Identity())
        self.is_reparameterized = True


class FFCResnetBlock(nn.Module):
    """LaMa's residual block: two 3×3 FFC layers (BatchNorm + ReLU each), a residual on each stream:
    ``x + conv2(conv1(x))``. ``ratio`` is the global share of the channels on both sides (LaMa: 0.75)."""

    def __init__(self, channels: int, fft: str, ratio: float = 0.75) -> None:
        super().__init__()
        self.conv1 = FFCLayer(channels, channels, 3, ratio, ratio, padding=1, fft=fft)
        self.conv2 = FFCLayer(channels, channels, 3, ratio, ratio, padding=1, fft=fft)

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y_l, y_g = self.conv2(*self.conv1(x_l, x_g))
        return x_l + y_l, x_g + y_g
