"""RETHINED (Sanchez et al., WACV 2025): coarse CNN + NeuralPatchMatch at low resolution, Attention Upscaling to HR.

An independent re-implementation from the paper (Sections 3.1-3.5) and the facts in ``reference/models.md``. It does
not copy the public code's bugs (models.md §2.7):

- a patch is a hole patch if *any* of its pixels is a hole (max-pool), not only its top-left pixel;
- hole queries may attend to *every* known patch and never to a hole patch; known patches keep their own content;
- attention masking uses a finite additive bias (-1e4, exact in fp16, carried into QKᵀ by one more dimension) plus a
  multiplicative re-mask, computed at run time from the mask: no N×N buffer, no ±1e8, no bool ``Where``;
- the SE-free blocks need no shape-dependent pooling; the scale ratio HR/LR must be an exact integer (checked);
- the HR result is composited with the known HR pixels, and hole HF comes only from known patches.

Pipeline (mask 1 = hole):

1. LR input: area-downsample the known image to ``lr_size``; an LR pixel is a hole if any HR pixel under it is.
2. Coarse CNN (encoder-decoder of MobileOne-style depthwise-separable rep-blocks) → sigmoid image, composited.
3. NeuralPatchMatch: tokens = ``pixel_unshuffle(coarse, P)`` (+ the encoder feature map at stride P), W_q/W_k to
   d_k, softmax(QKᵀ/√d_k) over known keys; hole tokens take ``A·V``, known tokens keep theirs; ``pixel_shuffle``;
   coherence conv; composite at LR.
4. Attention Upscaling (HR = s·LR): ``base = bilinear(x̂_LR)``; HF of the HR image (hole filled with ``base``) minus
   its Gaussian low-pass (σ = 2.01, 7 taps, as the official code); ``out = base + pixel_shuffle(A·HF_patches, s·P)``;
   ``dense`` = the paper's weighted sum over all keys, ``topk`` = the k largest weights (gather; k = 1 is hard
   attention).

High resolution at the memory floor: at 4096² one pass over the image is 200 MB, and the low-resolution network
costs the same at every size, so the HR path is what scales. It is laid out as few passes as the function allows
(:class:`AttentionUpscaling`): patches move by one row gather instead of 6-D unshuffle/shuffle transposes, the hole
is filled and the result composited by selects, and where the target runs data-dependent shapes only hole
patches are computed and composited, then scattered into the input image (``dense`` multiplies hole queries by
known keys; ``top1`` reads only LR windows and its source patches' windows, so the input's pooling and the
scatter are its only passes over the HR image). That form also computes only the hole queries' rows of the
attention (:meth:`NeuralPatchMatch.hole_rows`), a quarter of the N² work for a typical mask at every size.
``benchmarks/upscaler_forms.py`` measures it against the original formulation (``upscale_form="reference"``),
which the tests hold it equal to.

Default preset ``rethined`` (4,381,606 parameters train-time, 4,343,718 deployed; the paper's Table 3 says 4.3M,
which no released code matches):

- ``lr_size=512``, ``patch_size=8``: paper §4 and Table 4 (P = 8 "balances reconstruction and latency").
- ``d_k=576``: the official release's ``embed_dim`` (CrisalixSA/rethined@33d6e9f config); Table 5's 1024/2048 are
  available as options.
- feature conditioning on the stride-P encoder map (64² at 512, the token grid), as the official ``feature_i=3``.
- coarse widths (32, 64, 160, 384, 1408) with depths (1, 2, 3, 4, 2): five stride-2 blocks of 3×3 depthwise +
  1×1 pointwise + BatchNorm (paper §3.2), MobileOne k = 1 with scale and identity branches (paper §3.5); the width
  of the deepest stage is what brings the total to the paper's 4.3M.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DepthwiseSeparable, RepConvBlock, randomize_batchnorm
from .pipeline import InpaintingPipeline, composite, hole_of, select
from .registry import ResolutionConstraint, register_model

MASK_BIAS = 1e4  # finite: exact in fp16 (max 65504), and exp(-1e4) underflows to 0 in every precision


@dataclass(frozen=True)
class RethinedConfig:
    """Options for the paper's ablations (patch size, d_k, feature conditioning, LR size) and the upscaler."""

    lr_size: int = 512
    patch_size: int = 8
    d_k: int = 576
    feature_conditioning: bool = True
    encoder_channels: tuple[int, ...] = (32, 64, 160, 384, 1408)
    encoder_depths: tuple[int, ...] = (1, 2, 3, 4, 2)
    branches: int = 1
    upscale: str = "dense"
    topk: int = 1
    upscale_form: str = "rows"
    hf_sigma: float = 2.01
    hf_taps: int = 7

    def __post_init__(self) -> None:
        if self.patch_size not in (8, 16, 32):
            raise ValueError(f"patch_size must be 8, 16 or 32, not {self.patch_size}")
        if self.upscale not in ("dense", "topk"):
            raise ValueError(f"upscale must be 'dense' or 'topk', not {self.upscale!r}")
        if self.lr_size % 32:
            raise ValueError(f"lr_size must be a multiple of 32 (five stride-2 stages), not {self.lr_size}")
        if len(self.encoder_channels) != 5 or len(self.encoder_depths) != 5:
            raise ValueError("encoder_channels and encoder_depths need five stages")
        if self.topk < 1 or self.hf_taps % 2 == 0:
            raise ValueError("topk must be >= 1 and hf_taps odd")


class CoarseNet(nn.Module):
    """Encoder-decoder of depthwise-separable rep-blocks; returns the coarse image and the stride-``P`` feature."""

    def __init__(self, channels: tuple[int, ...], depths: tuple[int, ...], branches: int, feature_stride: int):
        super().__init__()
        c = channels
        self.feature_level = int(math.log2(feature_stride)) - 1  # stem is level 0 at stride 2
        stem = [RepConvBlock(4, c[0], 3, 2, branches=branches)]
        stem += [DepthwiseSeparable(c[0], c[0], 1, branches) for _ in range(depths[0] - 1)]
        stages = [nn.Sequential(*stem)]
        for i in range(1, 5):
            blocks = [DepthwiseSeparable(c[i - 1], c[i], 2, branches)]
            blocks += [DepthwiseSeparable(c[i], c[i], 1, branches) for _ in range(depths[i] - 1)]
            stages.append(nn.Sequential(*blocks))
        self.encoder = nn.ModuleList(stages)
        # decoder level i: project c[i+1] -> c[i], upsample x2, add the encoder skip, refine (a DW-separable block)
        self.project = nn.ModuleList(RepConvBlock(c[i + 1], c[i], 1, branches=branches) for i in range(4))
        self.refine = nn.ModuleList(DepthwiseSeparable(c[i], c[i], 1, branches) for i in range(4))
        self.head = nn.Sequential(
            RepConvBlock(c[0], c[0], 3, 1, groups=c[0], branches=branches),
            nn.Conv2d(c[0], 3, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        feature = skips[self.feature_level]
        for i in reversed(range(4)):
            x = F.interpolate(self.project[i](x), scale_factor=2.0, mode="nearest")
            x = self.refine[i](x + skips[i])
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.head(x), feature


def patches_to_tokens(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B,C,H,W) → (B, N, C·P²) with N = (H/P)(W/P); channel order (c, i, j) as ``pixel_unshuffle``."""
    return F.pixel_unshuffle(x, patch).flatten(2).transpose(1, 2)


def tokens_to_image(tokens: torch.Tensor, patch: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patches_to_tokens` for a (H/P, W/P) token grid."""
    return F.pixel_shuffle(tokens.transpose(1, 2).unflatten(2, grid), patch)


@dataclass(frozen=True)
class HoleRows:
    """The attention rows of one batch item's hole queries, the only rows a hole patch's output reads: what the
    ``compact`` form computes instead of all N² weights."""

    queries: torch.Tensor  # (n,) the hole tokens (any hole pixel), ascending
    weights: torch.Tensor  # (n, N) their rows of the attention


class NeuralPatchMatch(nn.Module):
    """Masked patch attention at LR (paper §3.3): ``A = softmax(QKᵀ/√d_k)`` restricted to known keys."""

    def __init__(self, patch: int, feature_channels: int, d_k: int) -> None:
        super().__init__()
        token_dim = 3 * patch * patch + feature_channels
        self.patch, self.d_k = patch, d_k
        self.to_q = nn.Linear(token_dim, d_k, bias=False)
        self.to_k = nn.Linear(token_dim, d_k, bias=False)
        # coherence layer: a light conv that smooths transitions between mixed patches (paper §3.3)
        self.coherence = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))

    def _tokens(self, coarse: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor:
        tokens = patches_to_tokens(coarse, self.patch)
        return tokens if feature is None else torch.cat([tokens, feature.flatten(2).transpose(1, 2)], dim=2)

    # The key mask's bias rides in the product as one more dimension: [q/√d_k, 1]·[k, −bias·hole] is the masked
    # logit QKᵀ/√d_k − bias·hole_key, with no pass over the N² logits (as long as a tenth of QKᵀ on a CPU).
    def _queries(self, tokens: torch.Tensor) -> torch.Tensor:
        queries = self.to_q(tokens) * (1.0 / math.sqrt(self.d_k))
        return torch.cat([queries, torch.ones_like(queries[..., :1])], dim=-1)

    def _keys(self, tokens: torch.Tensor, hole_tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.to_k(tokens), -MASK_BIAS * hole_tokens.unsqueeze(-1)], dim=-1)

    @staticmethod
    def _weights(logits: torch.Tensor, hole_tokens: torch.Tensor) -> torch.Tensor:
        """Softmax rows over the known keys (``hole_tokens``: the keys' (…, 1, N) hole flags); all 0 if none."""
        known_keys = 1.0 - hole_tokens
        weights = torch.softmax(logits, dim=-1) * known_keys
        return weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    def attention(self, coarse: torch.Tensor, feature: torch.Tensor | None, hole_tokens: torch.Tensor
                  ) -> torch.Tensor:
        """(B, N, N) attention; row i sums to 1 over the known keys (0 everywhere if the image has none)."""
        tokens = self._tokens(coarse, feature)
        logits = self._queries(tokens) @ self._keys(tokens, hole_tokens).transpose(1, 2)
        return self._weights(logits, hole_tokens.unsqueeze(1))

    def hole_rows(self, coarse: torch.Tensor, feature: torch.Tensor | None, hole_tokens: torch.Tensor
                  ) -> list[HoleRows]:
        """:meth:`attention`'s rows of the hole queries, per batch item: (holes × N) of the N² work."""
        tokens = self._tokens(coarse, feature)
        keys = self._keys(tokens, hole_tokens)
        rows = []
        for item in range(coarse.shape[0]):
            queries = (hole_tokens[item] > 0).nonzero().flatten()
            logits = self._queries(tokens[item].index_select(0, queries)) @ keys[item].transpose(0, 1)
            rows.append(HoleRows(queries, self._weights(logits, hole_tokens[item].unsqueeze(0))))
        return rows

    def forward(self, coarse: torch.Tensor, feature: torch.Tensor | None, mask_lr: torch.Tensor,
                compact: bool = False) -> tuple[torch.Tensor, torch.Tensor | list[HoleRows], torch.Tensor]:
        """Returns (LR result before compositing, attention, hole flag per token (B,N,1)); the attention is (B,N,N),
        or with ``compact`` only its hole rows (:class:`HoleRows` per item), which is all that the output reads:
        a known token keeps its own value."""
        grid = (coarse.shape[-2] // self.patch, coarse.shape[-1] // self.patch)
        hole_tokens = F.max_pool2d(mask_lr, self.patch, self.patch).flatten(1)  # any hole pixel → hole patch
        values = patches_to_tokens(coarse, self.patch)
        hole = hole_tokens.unsqueeze(2)
        if compact:
            attention = self.hole_rows(coarse, feature, hole_tokens)
            mixed = _mixed_hole_rows(attention, values, hole)
        else:
            attention = self.attention(coarse, feature, hole_tokens)
            mixed = hole * (attention @ values) + (1.0 - hole) * values
        image = tokens_to_image(mixed, self.patch, grid)
        return image + self.coherence(torch.cat([image, mask_lr], dim=1)), attention, hole


def _mixed_hole_rows(attention: list[HoleRows], values: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """``hole·(A·V) + (1 − hole)·V`` (B, N, C) from the hole rows alone: every other row has hole 0 and keeps V."""
    n = values.shape[1]
    index = torch.cat([rows.queries + item * n for item, rows in enumerate(attention)])
    weight = hole.flatten(0, 1).index_select(0, index)
    mixed = torch.cat([rows.weights @ values[item] for item, rows in enumerate(attention)])
    flat = values.flatten(0, 1)
    mixed = weight * mixed + (1.0 - weight) * flat.index_select(0, index)
    return flat.index_put((index,), mixed).view_as(values)


def gaussian_taps(sigma: float, taps: int) -> torch.Tensor:
    x = torch.arange(taps, dtype=torch.float64) - taps // 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).float()


class GaussianLowPass(nn.Module):
    """Separable Gaussian blur with normalised borders: ``conv(x) / conv(1)``, so no Pad op (reflect padding is
    missing or restricted on some NPU/TensorRT versions) and no darkening at the image edge."""

    def __init__(self, sigma: float, taps: int) -> None:
        super().__init__()
        self.register_buffer("taps", gaussian_taps(sigma, taps), persistent=False)

    def _blur_rows(self, x: torch.Tensor) -> torch.Tensor:
        c, k = x.shape[1], self.taps.numel()
        return F.conv2d(x, self.taps.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, k // 2), groups=c)

    def _blur_columns(self, x: torch.Tensor) -> torch.Tensor:
        c, k = x.shape[1], self.taps.numel()
        return F.conv2d(x, self.taps.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(k // 2, 0), groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the border normaliser is separable: divide by its row and column factors in turn, so an exporter's
        # constant folding keeps H + W numbers instead of an H×W map (64 MB at 4096²; a product of the two factors
        # would be folded into one)
        row_norm = self._blur_rows(torch.ones_like(x[:1, :1, :1, :]))  # (1,1,1,W); ones_like converts everywhere
        column_norm = self._blur_columns(torch.ones_like(x[:1, :1, :, :1]))  # (1,1,H,1)
        return self._blur_columns(self._blur_rows(x) / row_norm) / column_norm

    def valid(self, pieces: list[tuple[torch.Tensor, torch.Tensor]], inside_y: torch.Tensor, inside_x: torch.Tensor,
              size: int, top: int, left: int) -> torch.Tensor:
        """The blur of the ``size``×``size`` pixels from (``top``, ``left``) of windows (n, C, Sy, Sx) that hold their
        image's pixels with at least the taps' halo around that square, given as column ``pieces``: (n, C, Sy, w)
        each, with the positions (w,) of its columns in the window. ``inside_y`` (n, 1, Sy) and ``inside_x``
        (n, 1, Sx): 1.0 where a row/column is in the image. Pixels outside count as zeros and the border normaliser
        is the blur of the indicator, as :meth:`forward`. The valid convolutions are products with each window's
        band of the taps (zero outside the image, divided by the normaliser): on a batch of small windows a matrix
        product runs at the machine's peak, where a depthwise convolution is laid out for one large image, and the
        indicator and the normaliser cost no pass over the windows. Each piece multiplies its rows of the band, so
        the window is never assembled (a ``Concat`` of narrow pieces copies per row)."""

        def window_band(inside: torch.Tensor, start: int) -> torch.Tensor:  # (n, 1, S) -> (n, 1, S, size)
            band = self._band(inside.shape[-1], size, start - self.taps.numel() // 2)
            return (inside.transpose(1, 2) * band / (inside @ band)).unsqueeze(1)

        band_x = window_band(inside_x, left)
        across = functools.reduce(torch.add, (piece @ band_x.index_select(2, at) for piece, at in pieces))
        return window_band(inside_y, top).transpose(2, 3) @ across

    def _band(self, length: int, outputs: int, offset: int) -> torch.Tensor:
        """(length, outputs): column ``i`` holds the taps at rows ``offset + i`` onwards (a valid convolution)."""
        k, device = self.taps.numel(), self.taps.device
        tap = torch.arange(length, device=device).view(-1, 1) - torch.arange(outputs, device=device) - offset
        within = ((tap >= 0) & (tap < k)).to(self.taps.dtype)
        return self.taps[tap.clamp(0, k - 1)] * within


def mix_dense(attention: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The paper's Eq. (4): every query is the attention-weighted sum of all tokens."""
    return attention @ tokens


def mix_topk(attention: torch.Tensor, tokens: torch.Tensor, k: int) -> torch.Tensor:
    """Sum over each query's ``k`` largest weights only (renormalised); a gather instead of an N×N matmul."""
    batch, n, dim = tokens.shape
    weights, index = torch.topk(attention, k, dim=-1)  # (B, N, k)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    offsets = (torch.arange(batch, device=tokens.device) * n).view(batch, 1, 1)
    gathered = tokens.reshape(batch * n, dim)[(index + offsets).flatten()].view(batch, n, k, dim)
    return (weights.unsqueeze(-1) * gathered).sum(dim=2)


class PatchRows:
    """Patch moves at high resolution as one ``Gather`` of row segments, with no ``Transpose``.

    An image (B,C,H,W) cut into P×P patches on a (gh, gw) grid is, viewed as a table of ``B·C·H·gw`` rows of P
    contiguous pixels, addressable per patch row: row ``((b·C + c)·H + y)·gw + x`` holds pixels
    ``[b, c, y, x·P : (x+1)·P]``. Copying whole patches (to another place, or out to token-major order) is a gather
    of those rows with an index built at the token grid's size (P·gw times smaller than the image), which every
    target runs as one pass over the pixels; ``pixel_unshuffle``/``pixel_shuffle`` at 4096² are 6-D transposes,
    the slowest ops of the old formulation. Writing patches into an image is a scatter of the same rows.
    """

    def __init__(self, batch: int, channels: int, height: int, width: int, patch: int) -> None:
        self.batch, self.channels, self.height, self.patch = batch, channels, height, patch
        self.grid = (height // patch, width // patch)

    def table(self, image: torch.Tensor) -> torch.Tensor:
        """The image as its rows of ``patch`` pixels."""
        return image.reshape(-1, self.patch)

    def _offsets(self, tokens: torch.Tensor) -> torch.Tensor:
        """Row offset of each token's patch (its top-left row) inside a channel plane."""
        gw = self.grid[1]
        return torch.div(tokens, gw, rounding_mode="floor") * (self.patch * gw) + tokens % gw

    def _plane_rows(self, device: torch.device, channels: int) -> torch.Tensor:
        """(B, C, P): the row index of each (item, channel, row within a patch) of a patch at grid (0, 0)."""
        b = torch.arange(self.batch, device=device).view(-1, 1, 1)
        c = torch.arange(channels, device=device).view(1, -1, 1)
        y = torch.arange(self.patch, device=device).view(1, 1, -1)
        return ((b * channels + c) * self.height + y) * self.grid[1]

    def moved(self, image: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The image whose patch ``t`` holds patch ``source[b, t]`` of ``image`` (source: (B, gh·gw) integers)."""
        gh, gw = self.grid
        offsets = self._offsets(source).view(self.batch, 1, gh, 1, gw)
        index = self._plane_rows(source.device, self.channels).view(self.batch, self.channels, 1, self.patch, 1)
        return self.table(image).index_select(0, _indices(index + offsets)).view(image.shape)

    def rows_of(self, item: int, tokens: torch.Tensor, channels: int) -> torch.Tensor:
        """(n, C, P): the rows of patches ``tokens`` (n,) of batch item ``item`` in an image of ``channels``."""
        rows = self._plane_rows(tokens.device, channels)[item].view(1, channels, self.patch)
        return rows + self._offsets(tokens).view(-1, 1, 1)

    def patches(self, image: torch.Tensor, item: int, tokens: torch.Tensor) -> torch.Tensor:
        """Patches ``tokens`` (n,) of batch item ``item`` of ``image`` (B, c, H, W), as (n, c, P, P)."""
        channels = image.shape[1]
        index = _indices(self.rows_of(item, tokens, channels))
        return self.table(image).index_select(0, index).view(-1, channels, self.patch, self.patch)

    @staticmethod
    def segments(image: torch.Tensor, item: int, at_rows: torch.Tensor, size: int, index: torch.Tensor
                 ) -> torch.Tensor:
        """(n, c, R, k·size): rows ``at_rows`` (n, R) of batch item ``item`` of ``image`` (B, c, H, W), clamped to
        the image, each cut to its segments ``index`` (n, k) of ``size`` pixels (any divisor of the width): one
        gather of the image as rows of ``size`` pixels."""
        channels, height, width = image.shape[1:]
        planes = torch.arange(item * channels, (item + 1) * channels, device=at_rows.device).view(1, -1, 1)
        image_rows = planes * height + at_rows.clamp(0, height - 1).unsqueeze(1)  # (n, c, R)
        table_rows = image_rows.unsqueeze(-1) * (width // size) + index.view(-1, 1, 1, index.shape[-1])
        found = image.reshape(-1, size).index_select(0, _indices(table_rows))
        return found.view(*image_rows.shape, index.shape[-1] * size)

    def placed(self, tokens: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        """A (1, C, H, W) image whose patch ``t`` is row ``rank[t]`` of ``tokens`` (n, C·P²) (rank: (gh·gw,))."""
        gh, gw = self.grid
        c = torch.arange(self.channels, device=rank.device).view(self.channels, 1, 1, 1)
        y = torch.arange(self.patch, device=rank.device).view(1, 1, self.patch, 1)
        index = (rank.view(1, gh, 1, gw) * self.channels + c) * self.patch + y
        out = tokens.reshape(-1, self.patch).index_select(0, _indices(index))
        return out.view(1, self.channels, self.height, gw * self.patch)

    def written(self, image: torch.Tensor, rows: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """``image`` with its rows ``rows`` (from :meth:`rows_of`) replaced by ``patches``' rows in the same order: a
        ``ScatterND``, one copy of the image plus the patches, where a gather would index every pixel."""
        table = self.table(image).index_put((rows.flatten(),), patches.reshape(-1, self.patch))
        return table.view(image.shape)


def _indices(index: torch.Tensor) -> torch.Tensor:
    """Row indices as int32: Core ML's gather takes no other integer type (its converter computes this index
    arithmetic in fp32, exact below 2^24 rows: 786,432 at 4096²)."""
    return index.flatten().to(torch.int32)


UPSCALE_FORMS = ("rows", "compact", "reference")


class AttentionUpscaling(nn.Module):
    """Paper §3.4: reuse the LR attention to mix high-frequency HR patches; add them to the upsampled LR result.

    ``out = base + mix(A, HF)`` with ``base`` the bilinear upsampled LR result and ``HF`` the high frequencies of the
    HR image (hole filled with ``base``) in patches of P·s, composited with the known HR pixels. Three forms of the
    same function (equal to < 1e-5):

    - ``rows`` (every target): the patch moves as :class:`PatchRows` gathers. ``top1`` copies each patch's source
      patch in one gather; ``dense`` gathers the tokens, multiplies by A, and places the result back by a gather.
    - ``compact`` (where the target runs data-dependent shapes: ONNX Runtime): only hole patches are computed, each
      composited on its own and written into the input image by one scatter (known patches hold only known pixels,
      which compositing keeps). ``dense``: only known keys have weight, so the product is ``A[hole, known] ·
      HF[known]``: (holes·known)/N² of the dense work. ``top1``: each hole patch takes ``base`` from an LR window
      and the HF of its source patch, low-passed on that patch's window (the patch and the Gaussian's halo; only
      the halo is filled, the patch being known), so no op but the scatter reads or writes the whole HR image. The
      attention arrives as the hole queries' rows only (:class:`HoleRows`).
    - ``reference``: the original formulation (unshuffle, mix, shuffle), kept to test the others against.
    """

    def __init__(self, patch: int, mode: str, k: int, sigma: float, taps: int, form: str = "rows") -> None:
        super().__init__()
        if form not in UPSCALE_FORMS:
            raise ValueError(f"upscaler form must be one of {UPSCALE_FORMS}, not {form!r}")
        self.patch, self.mode, self.k, self.form = patch, mode, k, form
        self.lowpass = GaussianLowPass(sigma, taps)
        self.halo = taps // 2

    @property
    def compact(self) -> bool:
        """Whether this upscaler runs the ``compact`` form, which reads only the hole queries' attention rows."""
        return self.form == "compact" and (self.mode == "dense" or self.k == 1)

    def forward(self, lr_result: torch.Tensor, attention: torch.Tensor | list[HoleRows], image: torch.Tensor,
                mask: torch.Tensor, hole_tokens: torch.Tensor) -> torch.Tensor:
        """The HR result with the known pixels of ``image`` kept exactly (``mask`` (B,1,H,W): a hole where > 0.5,
        as :func:`composite`); ``attention``: (B, N, N), or its hole rows in the compact form; ``hole_tokens``:
        (B, N) 1.0 for a patch with any hole pixel."""
        scale = image.shape[-1] // lr_result.shape[-1]
        rows = PatchRows(*image.shape, self.patch * scale)
        if self.compact:
            return self._compact(rows, lr_result, attention, image, mask, hole_tokens)
        base = self._upsampled(lr_result, scale)
        hole = hole_of(mask)
        if self.form == "reference":
            return composite(image, base + self._reference(base, attention, image, hole, rows.patch), mask)
        high = self._high(base, image, hole)
        if self.mode == "topk" and self.k == 1:
            mixed = self._top1(rows, high, attention)
        elif self.mode == "topk":
            mixed = self._topk(rows, high, attention)
        else:
            mixed = self._dense(rows, high, attention)
        return composite(image, base + mixed, mask)

    @staticmethod
    def _upsampled(lr_result: torch.Tensor, scale: int) -> torch.Tensor:
        return F.interpolate(lr_result, scale_factor=float(scale), mode="bilinear", align_corners=False)

    def _high(self, base: torch.Tensor, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """High frequencies of the image with its hole filled by ``base`` (so the hole's border adds none)."""
        source = select(hole, base, image)
        return source - self.lowpass(source)

    def _reference(self, base: torch.Tensor, attention: torch.Tensor, image: torch.Tensor, hole: torch.Tensor,
                   hr_patch: int) -> torch.Tensor:
        source = image * (1.0 - hole) + base * hole
        high = patches_to_tokens(source - self.lowpass(source), hr_patch)
        grid = (base.shape[-2] // hr_patch, base.shape[-1] // hr_patch)
        mixed = mix_dense(attention, high) if self.mode == "dense" else mix_topk(attention, high, self.k)
        return tokens_to_image(mixed, hr_patch, grid)

    @staticmethod
    def _top1(rows: PatchRows, high: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """Each patch takes its best key's HF: its renormalised weight is exactly 1, or 0 for every patch of an item
        with no known patch at all (all-zero attention rows), where the reference adds nothing."""
        weight, source = torch.topk(attention, 1, dim=-1)
        any_known = (weight.amax(dim=(1, 2)) > 0).to(high.dtype).view(-1, 1, 1, 1)
        return rows.moved(high, source.squeeze(-1)) * any_known

    def _topk(self, rows: PatchRows, high: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The k best keys' HF, each weighted by its renormalised weight (one gather and one scaling per key)."""
        weights, sources = torch.topk(attention, self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        out = 0
        for j in range(self.k):
            scale = F.interpolate(weights[..., j].view(-1, 1, *rows.grid), scale_factor=float(rows.patch))
            out = out + rows.moved(high, sources[..., j]) * scale
        return out

    @staticmethod
    def _dense(rows: PatchRows, high: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        every = torch.arange(attention.shape[-1], device=attention.device)
        placed = [rows.placed(attention[item] @ rows.patches(high, item, every).flatten(1), every)
                  for item in range(attention.shape[0])]
        return torch.cat(placed) if len(placed) > 1 else placed[0]

    def _compact(self, rows: PatchRows, lr_result: torch.Tensor, attention: list[HoleRows], image: torch.Tensor,
                 mask: torch.Tensor, hole_tokens: torch.Tensor) -> torch.Tensor:
        """Hole patches only, each composited with its known pixels and written into ``image`` by one scatter."""
        if self.mode == "dense":
            base = self._upsampled(lr_result, rows.patch // self.patch)
            high = self._high(base, image, hole_of(mask))
        written, patches = [], []
        for item, hole_rows in enumerate(attention):
            queries = hole_rows.queries
            if self.mode == "dense":
                keys = (hole_tokens[item] <= 0).nonzero().flatten()  # the complement of the queries
                weights = hole_rows.weights.index_select(1, keys)
                mixed = weights @ rows.patches(high, item, keys).flatten(1)
                filled = rows.patches(base, item, queries) + mixed.view(-1, image.shape[1], rows.patch, rows.patch)
            else:
                any_known = (hole_tokens[item] < 1).any().to(image.dtype)  # a key with weight: attention not all 0
                filled = self._top1_patches(rows, item, lr_result, image, mask, hole_rows.weights, queries, any_known)
            known = rows.patches(image, item, queries)
            hole = hole_of(rows.patches(mask, item, queries))
            patches.append(select(hole, filled.clamp(0.0, 1.0), known, expand=False))
            written.append(rows.rows_of(item, queries, image.shape[1]))
        return rows.written(image, torch.cat(written), torch.cat(patches))

    def _top1_patches(self, rows: PatchRows, item: int, lr_result: torch.Tensor, image: torch.Tensor,
                      mask: torch.Tensor, attention: torch.Tensor, queries: torch.Tensor, any_known: torch.Tensor
                      ) -> torch.Tensor:
        """(n, C, P, P): hole patches ``queries`` of item ``item`` before compositing, each its ``base`` plus the HF
        of its best key (a known patch); ``attention``: their rows (n, N); ``any_known``: 0.0 if the item has no
        known patch, where attention is all zero and the reference adds no HF."""
        _, source = torch.topk(attention, 1, dim=-1)
        high = self._window_high(rows, item, lr_result, image, mask, source.flatten()) * any_known
        inner = range(rows.patch)
        return self._base_windows(rows, item, lr_result, queries, [(inner, inner)])[0] + high

    def _base_windows(self, rows: PatchRows, item: int, lr_result: torch.Tensor, tokens: torch.Tensor,
                      pieces: list[tuple[Sequence[int], Sequence[int]]]) -> list[torch.Tensor]:
        """``base`` on each of ``pieces``, the pixels (rows × columns) at those offsets from each patch's top-left
        pixel, within a patch of it: (n, C, rows, columns) per piece, on patches ``tokens``, interpolated
        from LR windows of each patch and a margin as ``Uy · window · Uxᵀ`` (U: the bilinear weights, the same for
        every patch). With the window's indices clamped at the image edge (the border rows repeated, as bilinear's
        own clamp) every pixel interpolates inside its window as inside the image, so it equals the
        full-resolution upsample there."""
        width = lr_result.shape[-1]
        scale = rows.patch // self.patch
        offsets = [offset for piece in pieces for axis in piece for offset in axis]
        reach = max(-min(offsets), max(offsets) - (rows.patch - 1))  # the pixels furthest outside the patch
        margin = math.ceil((reach - 0.5) / scale + 0.5)  # the LR pixels that their samples reach
        span = torch.arange(self.patch + 2 * margin, device=tokens.device) - margin
        top, left = _patch_origins(tokens, rows.grid[1], self.patch)
        windows = PatchRows.segments(lr_result, item, top + span, 1, (left + span).clamp(0, width - 1))  # (n,C,L,L)

        def weights(pixels: Sequence[int]) -> torch.Tensor:
            return _bilinear_weights(scale, pixels, margin, span.numel()).to(lr_result)

        return [weights(at_rows) @ windows @ weights(at_columns).transpose(0, 1) for at_rows, at_columns in pieces]

    def _window_high(self, rows: PatchRows, item: int, lr_result: torch.Tensor, image: torch.Tensor,
                     mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(n, C, P, P): the high frequencies of known patches ``tokens`` of item ``item``'s hole-filled image, equal
        to :meth:`_high` there. Each patch is blurred on its window: the patch, the Gaussian's halo above and below
        it, and strips of the neighbouring columns (``strip`` pixels, the smallest divisor of P that covers the
        halo), each a gather of contiguous segments, not of pixels. The patch is known, so only the halo rows and the
        strips are filled from ``base``; the blur's bands start where the halo does."""
        height, width = image.shape[-2:]
        patch, halo = rows.patch, self.halo
        strip = _strip_width(patch, halo)
        top, left = _patch_origins(tokens, rows.grid[1], patch)
        window_rows, halo_rows = range(-halo, patch + halo), [*range(-halo, 0), *range(patch, patch + halo)]
        own_columns, strip_columns = range(patch), [*range(-strip, 0), *range(patch, patch + strip)]
        ys = top + torch.tensor(window_rows, device=tokens.device)  # (n, Sy)
        xs = left + torch.arange(patch + 2 * strip, device=tokens.device) - strip  # (n, Sx)
        inside_y = ((ys >= 0) & (ys < height)).to(image.dtype).unsqueeze(1)  # (n, 1, Sy)
        inside_x = ((xs >= 0) & (xs < width)).to(image.dtype).unsqueeze(1)
        column = torch.div(left, patch, rounding_mode="floor")  # (n, 1)
        sides = (column * (patch // strip) + torch.tensor([-1, patch // strip], device=tokens.device)
                 ).clamp(0, width // strip - 1)  # (n, 2): the strips left and right of the patch

        def filled(at_rows: torch.Tensor, size: int, index: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
            known = rows.segments(image, item, at_rows, size, index)
            return select(hole_of(rows.segments(mask, item, at_rows, size, index)), base, known, expand=False)

        halo_base, strip_base = self._base_windows(rows, item, lr_result, tokens,
                                                   [(halo_rows, own_columns), (window_rows, strip_columns)])
        halos = filled(top + torch.tensor(halo_rows, device=tokens.device), patch, column, halo_base)
        own = rows.patches(image, item, tokens)
        pieces = [(torch.cat([halos[:, :, :halo], own, halos[:, :, halo:]], dim=2), own_columns),
                  (filled(ys, strip, sides, strip_base), strip_columns)]
        lowpass = self.lowpass.valid([(piece, torch.tensor(columns, device=tokens.device) + strip)
                                      for piece, columns in pieces], inside_y, inside_x, patch, halo, strip)
        return own - lowpass


def _bilinear_weights(scale: int, pixels: Sequence[int], margin: int, inputs: int) -> torch.Tensor:
    """(len(pixels), inputs): the weights of bilinear upsampling by ``scale`` (half-pixel centres) at the HR
    ``pixels`` (offsets from a patch's first pixel) from an LR window that starts ``margin`` pixels before the
    patch; every sample lies within the window's ``inputs``."""
    weights = torch.zeros(len(pixels), inputs, dtype=torch.float64)
    for j, pixel in enumerate(pixels):
        coordinate = margin + (pixel + 0.5) / scale - 0.5
        low = min(math.floor(coordinate), inputs - 1)
        weights[j, low] += 1.0 - (coordinate - low)
        if coordinate > low:
            weights[j, low + 1] += coordinate - low
    return weights


def _strip_width(patch: int, halo: int) -> int:
    """The smallest divisor of ``patch`` that is at least ``halo``: the width of the neighbours' strips a patch's
    window needs."""
    if halo > patch:
        raise ValueError(f"the Gaussian's halo ({halo} pixels) must fit in one neighbouring patch of {patch}")
    return next(width for width in range(max(halo, 1), patch + 1) if patch % width == 0)


def _patch_origins(tokens: torch.Tensor, columns: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1) each: the top row and left column of patches ``tokens`` on a grid ``columns`` wide."""
    top = torch.div(tokens, columns, rounding_mode="floor").view(-1, 1) * patch
    return top, (tokens % columns).view(-1, 1) * patch


class Rethined(InpaintingPipeline):
    """The RETHINED pipeline: ``forward(image, mask)`` at any integer multiple of ``lr_size`` (mask 1 = hole)."""

    def __init__(self, config: RethinedConfig) -> None:
        super().__init__()
        self.config = config
        self.constraint = ResolutionConstraint(
            multiple_of=config.lr_size, minimum=config.lr_size, square=True,
            why=f"RETHINED runs its LR network at {config.lr_size}x{config.lr_size} and upscales by an integer factor",
        )
        feature_channels = config.encoder_channels[int(math.log2(config.patch_size)) - 1]
        self.coarse = CoarseNet(config.encoder_channels, config.encoder_depths, config.branches, config.patch_size)
        self.npm = NeuralPatchMatch(config.patch_size, feature_channels if config.feature_conditioning else 0,
                                    config.d_k)
        self.upscaler = AttentionUpscaling(config.patch_size, config.upscale, config.topk, config.hf_sigma,
                                           config.hf_taps, config.upscale_form)

    def inpaint_composited(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The upscaler composites (its ``compact`` form writes only the hole patches into the image)."""
        scale = image.shape[-2] // self.config.lr_size  # square, an exact multiple (checked by the constraint)
        if scale > 1:
            # a known LR pixel has only known pixels under it, so pooling the image there pools the known image
            mask_lr = F.max_pool2d(mask, scale, scale)
            image_lr = F.avg_pool2d(image, scale, scale) * (1.0 - hole_of(mask_lr))
        else:
            mask_lr, image_lr = mask, image * (1.0 - hole_of(mask))
        coarse, feature = self.coarse(torch.cat([image_lr, mask_lr], dim=1))
        coarse = image_lr + coarse * mask_lr
        refined, attention, hole_tokens = self.npm(coarse, feature if self.config.feature_conditioning else None,
                                                   mask_lr, compact=self.upscaler.compact)
        lr_result = image_lr + refined.clamp(0.0, 1.0) * mask_lr
        if scale == 1:
            return composite(image, lr_result, mask)
        return self.upscaler(lr_result, attention, image, mask, hole_tokens.squeeze(-1))


def build_rethined(**options) -> Rethined:
    """Seeded random RETHINED with realistic (non-identity) BatchNorm statistics."""
    config = RethinedConfig(**options)
    model = Rethined(config)
    randomize_batchnorm(model)
    return model


_CONSTRAINT = ResolutionConstraint(multiple_of=512, minimum=512, square=True,
                                   why="LR network at 512x512, integer upscale factor")


def upscaler_form(variant: str, target: str) -> dict[str, str]:
    """The ``compact`` form works on hole patches only, with data-dependent shapes, which ONNX Runtime (the ``onnx``
    target) runs; TensorRT engines, Core ML and QNN get the static form of the same function."""
    return {"upscale_form": "compact"} if target == "onnx" else {}


@register_model(
    "rethined",
    summary="RETHINED (WACV 2025): coarse CNN + NeuralPatchMatch at 512, attention upscaling",
    constraint=_CONSTRAINT,
    variants={"dense": {"upscale": "dense"}, "top1": {"upscale": "topk", "topk": 1}},
    paper_key="rethined",
    forms=upscaler_form,
)
def rethined(**options) -> Rethined:
    return build_rethined(**options)
