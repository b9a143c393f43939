"""IN² (Implicit Neural Inpainting, arXiv 2401.10537, Pattern Recognition): inpainting for arbitrary-shaped face
images: an FFC encoder, neighbourhood attention at 1/8 scale and an implicit neural (LIIF-style) pyramid decoder,
so H and W are free (the paper's real-world setting is 1024×576).

No code or weights are public; this is a re-implementation from the paper (seed ``004``: §4.2, §5.1, Table 9) and
``reference/models.md`` §8. Native convention (chosen, as LaMa's): input ``cat[img·(1−m), m]``, img in [0,1],
m = 1 in the hole; output an RGB image in [0,1] (sigmoid), composited by the pipeline.

Architecture (stated by the paper unless marked *chosen*):

1. **Downsample processing encoder**: a 7×7 conv stem 4→32 (*chosen*: LaMa's stem), then three downsample
   processing blocks to 64/128/256 channels at 1/2, 1/4, 1/8: each a stride-2 3×3 conv whose output is split
   into FFC streams (global ratio 0.75, LaMa's), LaMa FFC residual blocks (two 3×3 FFC layers with BatchNorm
   each) and a channel attention block (CAB) with a residual;
2. **Attention body** at 1/8: two groups of four neighbour hybrid attention blocks (NHAB,
   ``X_N = LN(X); X_M = X + NA(X_N) + α·CAB(X_N); Y = X_M + MLP(LN(X_M))`` with α = 0.03). The paper's Eq. 1
   writes ``X_M`` without the shortcut ``X``; HAT's block, which it follows (Chen et al. 2023), has it, and a
   stack of eight needs it, so it is kept. Each group ends with a 3×3 conv and a residual over the group (*chosen*:
   HAT's RHAG);
3. **Implicit neural pyramid decoder**: three INR blocks 256→128 (1/4), 128→64 (1/2), 64→RGB (the target size).

Chosen sizes (the paper gives none), fitted to Table 9's 15.5M parameters: two FFC residual blocks per
downsample processing block; neighbourhood window 7×7 with 8 heads of 32 channels; NHAB MLP ratio 4; CABs as
HAT's (3×3 convs with compression 2, a squeeze-excitation gate with squeeze 16); INR hidden widths 256/128/64. That
makes **15,433,471** parameters (−0.4% from 15.5M): 2.93M encoder, 12.29M attention body (1.39M per NHAB and a
0.59M conv per group), 0.22M decoder.

Export forms (why this is not a transcription of NATTEN and LIIF):

- **Neighbourhood attention** (NATTEN is a custom CUDA op): NATTEN's border rule is kept (the 7×7 window is
  clamped inside the map, not zero-padded: a pixel near the edge attends to the 7×7 window shifted inward), as two
  constant ``Gather``s (rows, then columns; indices computed at trace time) that build each pixel's k² keys, then
  its values, and batched matmuls over (pixels, 1, d) × (pixels, d, k²): k²·C floats per pixel of the 1/8 map
  (0.46 GB at 1024×576), rank ≤ 5 everywhere. No relative position bias (the paper names none; NATTEN's module
  makes it optional, off by default since 0.17): its per-(pixel, key) table depends on weights only, so exporters
  fold it into a heads × pixels × k² constant (116 MB at 1024×576, past ONNX's 2 GB limit at 4096²).
- **INR blocks** (LIIF uses ``grid_sample``, which ONNX has only from opset 16 and TensorRT 8.2 lacks): the query
  grid is fixed per export, so each axis' two neighbours, their relative offsets and their area weights are
  constants computed at trace time (``Gather`` by constant indices), applied per axis so that no constant is
  H×W-sized. LIIF's area weights on a regular grid are
  bilinear weights (border queries clamp to the edge, as ``F.interpolate(..., align_corners=False)``). The local
  function ``f(a_l, δ_l) = GELU(W_a·a_l + W_δ·δ_l + b)`` is computed with ``W_a·a`` at the feature resolution
  before the gather (exactly equal, k× cheaper), and ``W_δ·δ`` is separable per axis. The cell ``(h/H, w/W)``
  enters the MLP's first layer as a constant bias.
- **FFC**: :mod:`rethined_bench.models.layers` with ``fft="matmul"`` (constant DFT matrices at the size each
  FourierUnit sees: H/2×W/2, H/4×W/4, H/8×W/8), the one form every target gets; ``fft="torch"`` keeps
  ``torch.fft`` as the reference it is tested against.

Measured (``rbench export --target onnx --model in2 --res 1024x576``, then ``rbench run`` on host-cpu: ONNX Runtime
fp32 on a shared 2-core x86 VM, 1 process, so latencies are rough): ONNX parity 8.9e-7 at 512² and 1024×576 (opset
18; opset 13 also exports, 4.8e-7 at 56×80); Core ML fp16 converts (fp16 error bound 1.0e-3 at 64×96); fvcore
88.5 / 201.0 / 372.1 GMACs at 512² / 1024×576 / 1024² (the attention body's per-pixel MLPs and 3×3 CAB convs are
most of it); median 6.7 s / 18.7 s / 19.8 s (CV up to 30%). The paper times 20 ms at 512² on an RTX 4090.

Not reproduced: the adaptive training strategy, the losses and the discriminator (training only).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFCLayer, FFCResnetBlock
from .pipeline import InpaintingPipeline
from .registry import ResolutionConstraint, register_model

STEM = 32
WIDTHS = (64, 128, 256)  # encoder and decoder widths (paper §5.1)
GLOBAL_RATIO = 0.75  # FFC global share (LaMa's)
FFC_BLOCKS = 2  # FFC residual blocks per downsample processing block
GROUPS, BLOCKS = 2, 4  # NHAB groups, blocks per group (paper §5.1)
WINDOW, HEADS = 7, 8
MLP_RATIO = 4
CAB_COMPRESS, CAB_SQUEEZE = 2, 16
ALPHA = 0.03  # CAB scale in the NHAB (paper, after HAT)
INR_HIDDEN = (256, 128, 64)
DOWNSCALE = 2 ** len(WIDTHS)
FFT_MODES = ("matmul", "torch")
RESIDUAL_GAIN = 0.25  # seeded init: scale of the last conv of each residual branch
OUTPUT_GAIN = 0.3  # seeded init: scale of the RGB layer, so that the sigmoid is not saturated


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    """``x.shape`` as Python ints, also under ``torch.jit.trace`` (fvcore, the opset-13 exporter), where sizes are
    traced values: the export's sizes are fixed, and the constants below are computed from them."""
    return tuple(int(n) for n in x.shape)


def _constant(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A tensor computed at trace time: a constant (initializer) in every export, on ``like``'s device."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(like.device)


# ------------------------------------------------------------------------------------------------- attention


def window_starts(length: int, kernel: int) -> np.ndarray:
    """NATTEN's window start per position: centred, clamped inside ``[0, length)`` (no zero padding)."""
    return np.clip(np.arange(length) - kernel // 2, 0, length - kernel)


class NeighbourhoodAttention(nn.Module):
    """NATTEN's 2-D neighbourhood attention (dilation 1, no relative position bias) on channels-last maps
    (B, H, W, C): each pixel attends to the ``kernel × kernel`` window NATTEN gives it (:func:`window_starts`)."""

    def __init__(self, dim: int, heads: int = HEADS, kernel: int = WINDOW) -> None:
        super().__init__()
        if kernel % 2 == 0 or dim % heads:
            raise ValueError(f"need an odd window and heads dividing dim, not kernel {kernel}, {heads} heads, {dim}")
        self.heads, self.kernel = heads, kernel
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def neighbourhoods(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) → (B, H·W, k², C): each pixel's window, row-major, by two constant gathers."""
        batch, height, width, channels = _shape(x)
        k = self.kernel
        offsets = np.arange(k)
        rows = _constant((window_starts(height, k)[:, None] + offsets).reshape(-1), x)  # (H·k,)
        cols = _constant((window_starts(width, k)[:, None] + offsets).reshape(-1), x)  # (W·k,)
        x = x.index_select(1, rows).reshape(batch * height, k, width, channels)
        x = x.index_select(2, cols).reshape(batch * height, k, width, k, channels)
        return x.permute(0, 2, 1, 3, 4).reshape(batch, height * width, k * k, channels)

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) → (B·heads, H·W, k², C/heads): :meth:`neighbourhoods` split into heads."""
        batch, height, width, channels = _shape(x)
        per_head = self.neighbourhoods(x).reshape(batch, height * width, self.kernel ** 2, self.heads, -1)
        return per_head.permute(0, 3, 1, 2, 4).reshape(batch * self.heads, height * width, self.kernel ** 2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = _shape(x)
        if min(height, width) < self.kernel:
            raise ValueError(f"neighbourhood attention needs a map of at least {self.kernel}x{self.kernel}, "
                             f"got {height}x{width}")
        heads, d, pixels = self.heads, channels // self.heads, height * width
        q, k, v = self.qkv(x).split(channels, dim=-1)
        q = q.reshape(batch, pixels, heads, d).permute(0, 2, 1, 3).reshape(batch * heads, pixels, 1, d)
        # keys, then values: one k²-sized copy is alive at a time (k²·C floats per pixel)
        logits = (q * self.scale) @ self.windows(k).transpose(-1, -2)  # (B·heads, HW, 1, k²)
        out = logits.softmax(-1) @ self.windows(v)  # (B·heads, HW, 1, d)
        out = out.reshape(batch, heads, height, width, d).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
        return self.proj(out)


class ChannelAttentionBlock(nn.Module):
    """HAT's CAB on (B, C, H, W): 3×3 conv C→C/compress, GELU, 3×3 conv back to C, then a squeeze-excitation gate
    (global mean, 1×1 C→C/squeeze, ReLU, 1×1 back, sigmoid)."""

    def __init__(self, dim: int, compress: int = CAB_COMPRESS, squeeze: int = CAB_SQUEEZE) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // compress, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(dim // compress, dim, 3, padding=1))
        self.gate = nn.Sequential(nn.Conv2d(dim, dim // squeeze, 1), nn.ReLU(), nn.Conv2d(dim // squeeze, dim, 1),
                                  nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y * self.gate(y.mean((2, 3), keepdim=True))


class NeighbourHybridAttentionBlock(nn.Module):
    """NHAB on channels-last maps: ``X_M = X + NA(LN(X)) + α·CAB(LN(X))``, ``Y = X_M + MLP(LN(X_M))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighbourhoodAttention(dim)
        self.cab = ChannelAttentionBlock(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, MLP_RATIO * dim), nn.GELU(), nn.Linear(MLP_RATIO * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        local = self.cab(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.attn(y) + ALPHA * local
        return x + self.mlp(self.norm2(x))


class AttentionGroup(nn.Module):
    """A group of NHABs, then a 3×3 conv, with a residual over the group (HAT's RHAG); (B, C, H, W) in and out."""

    def __init__(self, dim: int, blocks: int = BLOCKS) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(NeighbourHybridAttentionBlock(dim) for _ in range(blocks)))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


# ------------------------------------------------------------------------------------------------- encoder


class DownsampleProcessingBlock(nn.Module):
    """Stride-2 3×3 conv into (local, global) FFC streams, FFC residual blocks, then a residual CAB."""

    def __init__(self, in_ch: int, out_ch: int, fft: str) -> None:
        super().__init__()
        self.down = FFCLayer(in_ch, out_ch, 3, 0.0, GLOBAL_RATIO, stride=2, padding=1, fft=fft)
        self.ffc = nn.ModuleList(FFCResnetBlock(out_ch, fft, GLOBAL_RATIO) for _ in range(FFC_BLOCKS))
        self.cab = ChannelAttentionBlock(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_l, x_g = self.down(x)
        for block in self.ffc:
            x_l, x_g = block(x_l, x_g)
        x = torch.cat([x_l, x_g], dim=1)
        return x + self.cab(x)


class Encoder(nn.Module):
    """Stem (7×7 conv, BatchNorm, ReLU) and three downsample processing blocks: (B,4,H,W) → (B,256,H/8,W/8)."""

    def __init__(self, fft: str) -> None:
        super().__init__()
        self.stem = FFCLayer(4, STEM, 7, padding=3, fft=fft)
        widths = (STEM, *WIDTHS)
        self.blocks = nn.Sequential(*(DownsampleProcessingBlock(a, b, fft) for a, b in zip(widths, widths[1:])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)[0])


# ------------------------------------------------------------------------------------------------- decoder


def ensemble_axis(n_in: int, n_out: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...],
                                                   tuple[np.ndarray, ...]]:
    """LIIF's local ensemble along one axis, for ``n_out`` query pixels over ``n_in`` feature pixels (centres at
    ``(i + 0.5)/n``): the two neighbouring feature indices, their area weights and the relative offsets (query −
    feature, in feature pixels). The weights are bilinear weights with the edge clamped, as ``F.interpolate``
    (``align_corners=False``); the offsets keep the unclamped query position."""
    query = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    clamped = np.clip(query, 0, n_in - 1)
    low = np.floor(clamped).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    w_high = (clamped - low).astype(np.float32)
    return (low, high), (1 - w_high, w_high), ((query - low).astype(np.float32), (query - high).astype(np.float32))


class INRBlock(nn.Module):
    """One pyramid layer: features (B, c_in, h, w) → (B, c_out, H, W) at any (H, W).

    ``â(x) = Σ_l w_l · GELU(W_a·a_l + W_δ·δ_l(x) + b)`` over the four neighbours l (the paper's Eq. 2, LIIF's
    local ensemble), then ``MLP([â, cell])`` with ``cell = (h/H, w/W)`` (Eq. 3-4): two 1×1 convs with GELU.
    """

    def __init__(self, in_ch: int, out_ch: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_ch, hidden, 1)  # W_a and b, applied at the feature resolution
        self.position = nn.Linear(2, hidden, bias=False)  # W_δ over (Δy, Δx)
        self.fc1 = nn.Conv2d(hidden + 2, hidden, 1)  # over [â, cell]
        self.fc2 = nn.Conv2d(hidden, out_ch, 1)

    def ensemble(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """â at ``size``: constant gathers of the embedded features, separable offsets and weights."""
        (height, width), embedded = size, self.embed(features)
        h, w = _shape(features)[-2:]
        rows, row_weights, row_offsets = ensemble_axis(h, height)
        cols, col_weights, col_offsets = ensemble_axis(w, width)
        w_y, w_x = self.position.weight.unbind(1)  # (hidden,) each
        out = None
        for row, row_weight, row_offset in zip(rows, row_weights, row_offsets):
            by_row = (embedded.index_select(2, _constant(row, features))
                      + w_y.view(1, -1, 1, 1) * _constant(row_offset, features).view(1, 1, -1, 1))
            row_sum = None
            for col, col_weight, col_offset in zip(cols, col_weights, col_offsets):
                term = F.gelu(by_row.index_select(3, _constant(col, features))
                              + w_x.view(1, -1, 1, 1) * _constant(col_offset, features).view(1, 1, 1, -1))
                term = term * _constant(col_weight, features).view(1, 1, 1, -1)
                row_sum = term if row_sum is None else row_sum + term
            row_sum = row_sum * _constant(row_weight, features).view(1, 1, -1, 1)
            out = row_sum if out is None else out + row_sum
        return out

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        hidden = self.embed.out_channels
        h, w = _shape(features)[-2:]
        cell = _constant(np.array([[h / size[0], w / size[1]]], np.float32), features)
        bias = F.linear(cell, self.fc1.weight[:, hidden:, 0, 0], self.fc1.bias)[0]  # constant over the image
        y = F.gelu(F.conv2d(self.ensemble(features, size), self.fc1.weight[:, :hidden], bias))
        return self.fc2(y)


class Decoder(nn.Module):
    """The implicit neural pyramid: INR blocks to 1/4, 1/2 and the target size; RGB in [0,1] (sigmoid)."""

    def __init__(self) -> None:
        super().__init__()
        ins = WIDTHS[::-1]
        outs = (*WIDTHS[::-1][1:], 3)
        self.blocks = nn.ModuleList(INRBlock(a, b, h) for a, b, h in zip(ins, outs, INR_HIDDEN))

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        for level, block in enumerate(self.blocks):
            scale = 2 ** (len(self.blocks) - 1 - level)
            x = block(x, (height // scale, width // scale))
        return torch.sigmoid(x)


# ------------------------------------------------------------------------------------------------- model


class IN2Net(nn.Module):
    """The native network: ``forward(image, mask)`` with image in [0,1] and mask 1 = hole, H and W multiples of 8;
    returns the RGB prediction in [0,1] (not composited)."""

    def __init__(self, fft: str = "matmul") -> None:
        super().__init__()
        if fft not in FFT_MODES:
            raise ValueError(f"fft must be one of {FFT_MODES}, not {fft!r}")
        self.encoder = Encoder(fft)
        self.body = nn.Sequential(*(AttentionGroup(WIDTHS[-1]) for _ in range(GROUPS)))
        self.decoder = Decoder()

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        features = self.body(self.encoder(torch.cat([image * (1.0 - mask), mask], dim=1)))
        return self.decoder(features, *_shape(image)[-2:])


class IN2(InpaintingPipeline):
    """The IN² pipeline (rbench contract: image in [0,1], mask 1 = hole, any H×W the constraint accepts)."""

    constraint = ResolutionConstraint(
        multiple_of=DOWNSCALE, minimum=DOWNSCALE * WINDOW,
        why=f"three stride-2 stages; the 1/8 map must hold the {WINDOW}x{WINDOW} attention window",
    )

    def __init__(self, fft: str = "matmul") -> None:
        super().__init__()
        self.net = IN2Net(fft)

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(image, mask)


def init_weights(net: IN2Net) -> IN2Net:
    """Seeded random weights (the global RNG; ``create_model`` seeds it) with trained-like scales.

    Convs: Kaiming-normal (ReLU gain); NAT/HAT's truncated normal (std 0.02) for the attention and MLP linears and
    the relative position bias; the last conv of each residual branch (FFC blocks, CABs, group convs) scaled by
    :data:`RESIDUAL_GAIN` so that depth does not inflate the features; the RGB layer by :data:`OUTPUT_GAIN`.
    """
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, FFCResnetBlock):
                for conv in (*sum(module.conv2.ffc.stream_convs(), []),):
                    conv.weight.mul_(RESIDUAL_GAIN)
            elif isinstance(module, ChannelAttentionBlock):
                module.body[-1].weight.mul_(RESIDUAL_GAIN)
            elif isinstance(module, AttentionGroup):
                module.conv.weight.mul_(RESIDUAL_GAIN)
        net.decoder.blocks[-1].fc2.weight.mul_(OUTPUT_GAIN)
    return net


@register_model(
    "in2",
    summary="IN² (Pattern Recognition 2024): FFC encoder, neighbourhood attention, implicit neural pyramid decoder; "
            "any aspect ratio",
    constraint=IN2.constraint,
    in_default_sweep=False,
)
def in2(fft: str = "matmul") -> IN2:
    """Seeded random IN² (see :func:`init_weights`); ``fft="torch"`` is the reference FFT path."""
    model = IN2(fft)
    init_weights(model.net)
    return model
