"""HiFill (Yi et al., CVPR 2020): a 2.7M-parameter generator at 512², and contextual residual aggregation (CRA) to any
multiple of 512.

An independent re-implementation from the paper (``seeds/002``, §3) and ``reference/models.md`` §6, with names,
shapes and semantics read from ``duxingren14/Hifill-tensorflow@HEAD`` (``model.py``, ``ops.py``, ``test.py``) and its
checkpoint index (``model_logs/places2/0.index``: 192 generator variables, 2,722,791 values). There is no PyTorch
original, so ``HiFill.net`` keeps the TensorFlow layer scopes as module names (table below).

Generator (``HiFillGenerator``; native convention: image in [-1,1] with the hole zeroed, mask 1 = hole, 512²):

1. coarse net (811,489) at 256²: the 4-channel input decimated (TF1 bilinear ÷2), 26 gated convs with one-channel
   "slice" gates: 5×5 s2 4→32, 32→32, s2 32→64, 3 × 64, 14 dilated (1,1,1,2,2,2,2,2,4,4,4,4,8,8), 3 × 64, ×2 + 64→32,
   32→32, ×2 + 32→3; clip, ×2 to 512², composite into the input;
2. refine net (1,911,302) at 512² with pixel-wise (1×1) gates: encoder (319,616) 4→32→32 (256², skip), 32→64→64
   (128², skip), 64→128→128 (64²); dilations 1/2/4/8/16 (820,480); attention (492,032): the ACM, a 3×3 conv,
   concat with the pre-attention features, a 3×3 256→128; decoder (279,174): ×2 + 128→64, 64→64, ATM on the 128²
   skip + 3×3 d1 and d2, concat; the same at 256² with 32 channels; ×2 + 64→3 at 512², clip.

ACM (attention computing module): keys are the 3×3 neighbourhoods of the 64² features decimated to 32² (1024),
L2-normalised; queries the same neighbourhoods, not normalised; scores fused by two 3×3 identity-diagonal convs over
the 1024×1024 score image (row-major, then column-major order, as the TF code); a key is valid if no hole pixel lies
in its 16×16 block or the 8 blocks around it; ``A = softmax(10·s·v)·v``. That is the TF code's softmax, kept by
default: invalid logits are 0, not −∞, so their exp stays in the denominator and rows sum to less than 1 (most when
the valid scores are low); the checkpoint was trained with it. ``softmax="paper"`` is the paper's Eq. (2), a softmax
over the valid keys only, with a finite additive bias (−1e4, exact in fp16) and the same re-mask.
ATM (attention transfer): every query's patch is the A-weighted sum of all key patches, and patches overlap:
3×3 at stride 2 on the 64² map (the ACM's own output), 2r×2r at stride r on the 128² and 256² skips (r = 4, 8),
placed as TF's ``conv2d_transpose`` with ``SAME`` padding places them, overlaps summed, not normalised.
CRA (paper §3.1, TF ``test.py``), for H×W = 512·kh × 512·kw (the paper: "not necessary to be equal but must be
multiples of 512", and the generator always sees 512², so each axis has its own factor): LR = kh×kw box average of
the known image, LR mask = any hole in the box; ``residual = known − up(LR input)``;
``out = up(LR out) + A @ residual patches`` on the 32×32 grid of 16kh×16kw non-overlapping patches; composited
(the pipeline base).

Export form (the only form; one graph from the HR input to the HR output, CRA included, as RETHINED's upscaler):
the data-dependent convolutions are matmuls (scores ``(1024 × 9C)·(9C × 1024)``, transfers ``A·patches``);
overlapping folds are four phase-shifted ``pixel_shuffle``s summed (no ``Col2Im``/``F.fold``, which TensorRT and
Core ML lack, no one-hot ConvTranspose weights); the ACM's 3×3 taps are its 4×4 phase layout restricted by a
constant column gather, so the matmul does not multiply zeros; the score fusion is shifted adds; tensors stay
rank ≤ 5 (Core ML); TF1 bilinear resizes (``align_corners=False, half_pixel_centers=False``: source = destination
/ factor) are align-corners Resizes of the edge-extended input, cropped; TF ``SAME`` padding is kept
(:mod:`.layers.gated`), so a converted checkpoint computes what TensorFlow computed.

TensorFlow checkpoint → ``HiFill.net`` (the converter's whole table; ``{L}`` is the module name, which is the TF
layer scope; filters are HWIO in TF and OIHW here: ``torch.from_numpy(w).permute(3, 2, 0, 1)``; :func:`tf_variable`
gives the TF name of every key, and the tests check all 192 names and shapes against the checkpoint index):

=====================================================  ==================================================
TF variable                                            ``HiFill.net`` parameter
=====================================================  ==================================================
``generator/{L}_feat/w``, ``…_feat/biases``            ``coarse.{L}.feat.weight``, ``coarse.{L}.feat.bias``
``generator/{L}_gate/w``, ``…_gate/biases``            ``coarse.{L}.gate.weight``, ``coarse.{L}.gate.bias``
``generator/{L}/{L}_conv_feat/…``, ``…_conv_gate/…``   the same, for ``L`` in ``c_de_up_128``, ``c_de_toRGB``
``generator/{L}/w``, ``generator/{L}/biases``          ``refine.{L}.feat.weight``, ``refine.{L}.feat.bias``
``generator/{L}/pw``, ``generator/{L}/ds_biases``      ``refine.{L}.gate.weight``, ``refine.{L}.gate.bias``
``generator/{L}/{L}_conv/{w,biases,pw,ds_biases}``     the same, for ``L`` in ``re_de_up__128``,
                                                       ``re_de_up__256``, ``re_de_toRGB__256``
=====================================================  ==================================================

Coarse layers ``L``: ``c_en_down_128, c_en_conv_128, c_en_down_64, c_en_conv{1,2,3}_64, c_dil_d{1..14},
c_de_conv{1,2,3}_64, c_de_up_128, c_de_conv_128, c_de_toRGB``. Refine layers: ``re_en_{down,conv}_{256,128,64},
re_dil_d{1,2,4,8,16}, re_att_64_att{1,3}, re_de_up__128, re_de_conv_128, re_de_att_128_{1,2}, re_de_up__256,
re_de_conv_256, re_de_att_256_{1,2}, re_de_toRGB__256``.

Measured (seeded weights; ONNX = dynamo, opset 18, onnxsim, ONNX Runtime CPU fp32; ``rbench run --device host-cpu
--processes 1 --min-iters 3`` on 2 cores shared with other jobs whose load varied from cell to cell: upper bounds,
so compare the scaling by GMACs):

======  ============  =============  ======================  ===================
size    fvcore GMACs  of which CRA   ONNX parity (max abs)   host-cpu median
======  ============  =============  ======================  ===================
512²    36.02         0              1.1e-5                  1.00 s
1024²   39.26         3.25           3.7e-5                  1.68 s
2048²   49.00         12.99          1.8e-5                  2.00 s
4096²   87.96         51.94          3.3e-5                  2.05 s
======  ============  =============  ======================  ===================

The generator's 36.0 GMACs are 43% attention: the two ATM transfers (4.3 + 8.6) and the ACM's scores and transfer
(1.2 + 1.2), which TF's ``conv2d_transpose`` with 1024 input channels costs too. Core ML (fp16, iOS16) converts at
1024² (515 MIL ops, no fp16 range issue).

Not reproduced: TF ``test.py``'s resizes of arbitrary photos to 512·k (rbench takes exact multiples), its nearest
LR mask (a known LR pixel could average hole pixels; here a box with any hole pixel is a hole, so hole content is
never read) and its 7×7 Gaussian-feathered final blend (it would change known pixels; the contract composites with
the hard mask); the LR input that CRA upsamples is the masked one (TF's unmasked box average differs only in
invalid keys, which carry zero weight); the flow visualisation and the ``HARD`` attention option (the released
config is ``SOFT``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers.gated import GatedConv2d, same_padding
from .pipeline import InpaintingPipeline
from .registry import ResolutionConstraint, register_model

LR_SIZE = 512  # the generator's resolution; CRA scales by an integer factor per axis
GRID = 32  # attention grid: 32×32 patches of the 64² feature map decimated by 2
SOFTMAX_SCALE = 10.0
MASK_BIAS = 1e4  # "paper" softmax: finite, exact in fp16, and exp(-1e4) is 0 in every precision
SOFTMAX_MODES = ("tf", "paper")
ACM_KERNEL, ACM_STRIDE = 3, 2  # ops.py contextual_attention(ksize=3, rate=2): raw patches 2·rate − 1
COARSE_DILATIONS = (1, 1, 1, 2, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8)
REFINE_DILATIONS = (1, 2, 4, 8, 16)
# "deconv" layers: bilinear ×2, then the gated conv, which TF nests in a scope "{L}/{L}_conv"
UPSAMPLED = frozenset({"c_de_up_128", "c_de_toRGB", "re_de_up__128", "re_de_up__256", "re_de_toRGB__256"})


# --- TensorFlow 1 resizes --------------------------------------------------------------------------------------

def upsample_tf(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """TF1 ``resize_bilinear`` by integer factors (``align_corners=False``, no half-pixel centres): output pixel
    ``f·i + t`` is ``x[i] + (x[i+1] − x[i])·t/f``, the last source pixel repeated. That is an align-corners resize
    of ``x`` extended by its last row and column to ``f·n + 1`` samples, cropped: one Resize op, no Pad."""
    if (fh, fw) == (1, 1):
        return x
    height, width = x.shape[-2:]
    x = torch.cat([x, x[..., -1:]], dim=-1)
    x = torch.cat([x, x[..., -1:, :]], dim=-2)
    x = F.interpolate(x, size=(fh * height + 1, fw * width + 1), mode="bilinear", align_corners=True)
    return x[..., :fh * height, :fw * width]


def decimate_tf(x: torch.Tensor, factor: int) -> torch.Tensor:
    """TF1 ``resize_bilinear`` down by an integer factor: source = destination · factor, an exact pixel."""
    return x[..., ::factor, ::factor]


# --- the generator ---------------------------------------------------------------------------------------------

def _coarse_layers() -> list[tuple[str, int, int, int, int, int]]:
    """(TF scope, in, out, kernel, stride, dilation) of the coarse net, in order (``model.py`` stage-1)."""
    c = 32
    layers = [("c_en_down_128", 4, c, 5, 2, 1), ("c_en_conv_128", c, c, 3, 1, 1), ("c_en_down_64", c, 2 * c, 3, 2, 1)]
    layers += [(f"c_en_conv{i}_64", 2 * c, 2 * c, 3, 1, 1) for i in (1, 2, 3)]
    layers += [(f"c_dil_d{i}", 2 * c, 2 * c, 3, 1, d) for i, d in enumerate(COARSE_DILATIONS, start=1)]
    layers += [(f"c_de_conv{i}_64", 2 * c, 2 * c, 3, 1, 1) for i in (1, 2, 3)]
    return layers + [("c_de_up_128", 2 * c, c, 3, 1, 1), ("c_de_conv_128", c, c, 3, 1, 1),
                     ("c_de_toRGB", c, 3, 3, 1, 1)]


class CoarseNet(nn.ModuleDict):
    """Stage 1 at 256² with slice gates: (B,4,512,512) → (B,3,512,512) in [-1,1] (before compositing)."""

    def __init__(self) -> None:
        super().__init__({name: GatedConv2d(i, o, k, s, d, gate="slice") for name, i, o, k, s, d in _coarse_layers()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = decimate_tf(x, 2)
        for name, layer in self.items():
            x = layer(upsample_tf(x, 2, 2) if name in UPSAMPLED else x)
        return upsample_tf(x.clamp(-1.0, 1.0), 2, 2)


def neighbourhoods(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) → (B,9C,H,W): each pixel's zero-padded 3×3 neighbourhood, tap-major (a, b, c); no Unfold."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return torch.cat([padded[..., a:a + height, b:b + width] for a in range(3) for b in range(3)], dim=1)


def fuse_scores(scores: torch.Tensor, grid: int) -> torch.Tensor:
    """TF ``contextual_attention(fuse=True)``: (B, N, N) scores, N = grid², each summed with its ±1 neighbours
    along the diagonal, first in row-major (h, w) order of both query and key, then in column-major (w, h) order.
    The flat-index shifts wrap across rows as in TF. TF's 3×3 identity-kernel convs, as two diagonal shifts added
    (a 1-channel conv over a 1024² image is as slow as a 64-channel one on CPU)."""
    batch, n, _ = scores.shape
    swap = (0, 2, 1, 4, 3)  # (q_h, q_w, k_h, k_w) ↔ (q_w, q_h, k_w, k_h)
    fused = _diagonal_sum(scores)
    fused = fused.view(batch, grid, grid, grid, grid).permute(swap).reshape(batch, n, n)
    fused = _diagonal_sum(fused)
    return fused.view(batch, grid, grid, grid, grid).permute(swap).reshape(batch, n, n)


def _diagonal_sum(y: torch.Tensor) -> torch.Tensor:
    """``y[p, q] + y[p−1, q−1] + y[p+1, q+1]`` over the last two axes, zero outside: a 3×3 identity-kernel conv."""
    n = y.shape[-1]
    padded = F.pad(y, (1, 1, 1, 1))
    return padded[..., :n, :n] + y + padded[..., 2:, 2:]


def key_validity(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(B,1,512,512) hole mask → (B,1,N) float: 1 where a key's block and its 8 neighbours hold no hole pixel."""
    block = mask.shape[-1] // grid
    holes = F.max_pool2d(F.max_pool2d(mask, block, block), 3, 1, padding=1)
    return (1.0 - holes).flatten(2)


def attention_weights(scores: torch.Tensor, valid: torch.Tensor, softmax: str = "tf") -> torch.Tensor:
    """Rows of A over the keys; zero on invalid keys. ``"tf"``: ``softmax(10·s·v)·v`` (invalid logits 0, rows sum
    ≤ 1); ``"paper"``: a softmax over the valid keys (finite bias, then the same re-mask; rows sum to 1)."""
    if softmax == "tf":
        return torch.softmax(scores * valid * SOFTMAX_SCALE, dim=-1) * valid
    return torch.softmax(scores * SOFTMAX_SCALE - MASK_BIAS * (1.0 - valid), dim=-1) * valid


def phase_patches(x: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """(B,C,G·r,G·r) → (B, G², 4·C·r²): the 2r×2r patches at stride r whose first row/column is ``r·i − pad``
    (zero outside), as 2×2 blocks of r×r tiles: columns ordered (s_h, s_w, c, t_h, t_w), tap (a, b) = (r·s + t)."""
    grid_h, grid_w = x.shape[-2] // stride, x.shape[-1] // stride
    tiles = F.pixel_unshuffle(F.pad(x, (pad, stride - pad, pad, stride - pad)), stride)  # (B, C·r², G+1, G+1)
    blocks = [tiles[..., s_h:s_h + grid_h, s_w:s_w + grid_w] for s_h in (0, 1) for s_w in (0, 1)]
    return torch.cat(blocks, dim=1).flatten(2).transpose(1, 2)


def fold_phases(patches: torch.Tensor, stride: int, pad: int, size: tuple[int, int]) -> torch.Tensor:
    """Inverse placement of :func:`phase_patches` with overlaps summed (TF ``conv2d_transpose`` with ``SAME``
    padding): four ``pixel_shuffle``s, each shifted by its block offset, added and cropped; no Col2Im."""
    batch, cells, columns = patches.shape
    grid_h, grid_w = size[0] // stride, size[1] // stride
    phases = patches.transpose(1, 2).reshape(batch, 4, columns // 4, grid_h, grid_w)
    out = 0
    for index, (s_h, s_w) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        tile = F.pixel_shuffle(phases[:, index], stride)
        out = out + F.pad(tile, (stride * s_w, stride * (1 - s_w), stride * s_h, stride * (1 - s_h)))
    return out[..., pad:pad + size[0], pad:pad + size[1]]


def tap_columns(channels: int, stride: int, kernel: int) -> list[int]:
    """Columns of the :func:`phase_patches` layout that hold taps (a, b) with a, b < ``kernel`` (≤ 2r)."""
    columns = []
    for block, (s_h, s_w) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        for c in range(channels):
            for t_h in range(stride):
                for t_w in range(stride):
                    if stride * s_h + t_h < kernel and stride * s_w + t_w < kernel:
                        columns.append(((block * channels + c) * stride + t_h) * stride + t_w)
    return columns


def transfer(attention: torch.Tensor, x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """ATM: ``conv2d_transpose(A, extract_patches(x, kernel, stride), stride)`` with TF ``SAME`` padding, i.e. each
    query's k×k patch is the A-weighted sum of the key patches, overlapping patches summed (``ops.py``
    ``apply_attention`` and the ACM's own output). ``attention`` is (B, N, N) over the grid x.shape / stride."""
    size = (int(x.shape[-2]), int(x.shape[-1]))
    pad = same_padding(size[0], kernel, stride)[0]
    patches = phase_patches(x, stride, pad)
    if kernel == 2 * stride:
        return fold_phases(attention @ patches, stride, pad, size)
    columns = tap_columns(x.shape[1], stride, kernel)
    taps = attention @ patches.index_select(-1, torch.tensor(columns, device=x.device))
    # scatter back into the phase layout: every column not a tap reads the appended zero column
    where = [len(columns)] * patches.shape[-1]
    for i, column in enumerate(columns):
        where[column] = i
    full = torch.cat([taps, torch.zeros_like(taps[..., :1])], dim=-1)
    return fold_phases(full.index_select(-1, torch.tensor(where, device=x.device)), stride, pad, size)


class AttentionComputing(nn.Module):
    """ACM (paper §3.2.1, ``ops.py contextual_attention``): (B,C,64,64) features and the 512² hole mask →
    (transferred features, attention (B, 1024, 1024) with rows = queries). No parameters."""

    def __init__(self, softmax: str = "tf") -> None:
        super().__init__()
        if softmax not in SOFTMAX_MODES:
            raise ValueError(f"softmax must be one of {SOFTMAX_MODES}, not {softmax!r}")
        self.softmax = softmax

    @staticmethod
    def scores(x: torch.Tensor) -> torch.Tensor:
        """Fused scores (B, N, N): unnormalised query neighbourhoods · L2-normalised key neighbourhoods."""
        patches = neighbourhoods(decimate_tf(x, ACM_STRIDE)).flatten(2)  # (B, 9C, N)
        keys = patches / patches.square().sum(dim=1, keepdim=True).sqrt().clamp_min(1e-8)
        return fuse_scores(patches.transpose(1, 2) @ keys, x.shape[-1] // ACM_STRIDE)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return attention_weights(self.scores(x), key_validity(mask, x.shape[-1] // ACM_STRIDE), self.softmax)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attention = self.attention(x, mask)
        return transfer(attention, x, ACM_KERNEL, ACM_STRIDE), attention


class RefineNet(nn.Module):
    """Stage 2 at 512² with pixel-wise gates, the ACM at 64² and ATMs at 128² and 256² (``model.py`` stage-2)."""

    def __init__(self, softmax: str = "tf") -> None:
        super().__init__()

        def gated(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> GatedConv2d:
            return GatedConv2d(in_ch, out_ch, 3, stride, dilation, gate="pixel")

        self.re_en_down_256, self.re_en_conv_256 = gated(4, 32, 2), gated(32, 32)
        self.re_en_down_128, self.re_en_conv_128 = gated(32, 64, 2), gated(64, 64)
        self.re_en_down_64, self.re_en_conv_64 = gated(64, 128, 2), gated(128, 128)
        self.dilated = [f"re_dil_d{d}" for d in REFINE_DILATIONS]
        for name, d in zip(self.dilated, REFINE_DILATIONS):
            self.add_module(name, gated(128, 128, dilation=d))
        self.acm = AttentionComputing(softmax)
        self.re_att_64_att1, self.re_att_64_att3 = gated(128, 128), gated(256, 128)
        for size, out_ch in ((128, 64), (256, 32)):
            self.add_module(f"re_de_up__{size}", gated(128, out_ch))
            self.add_module(f"re_de_conv_{size}", gated(out_ch, out_ch))
            self.add_module(f"re_de_att_{size}_1", gated(out_ch, out_ch))
            self.add_module(f"re_de_att_{size}_2", gated(out_ch, out_ch, dilation=2))
        self.re_de_toRGB__256 = gated(64, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for size in (256, 128, 64):
            x = getattr(self, f"re_en_conv_{size}")(getattr(self, f"re_en_down_{size}")(x))
            skips.append(x)
        for name in self.dilated:
            x = getattr(self, name)(x)
        hallucinated = x
        x, attention = self.acm(x, mask)
        x = self.re_att_64_att3(torch.cat([hallucinated, self.re_att_64_att1(x)], dim=1))
        for size, skip in ((128, skips[1]), (256, skips[0])):
            x = getattr(self, f"re_de_up__{size}")(upsample_tf(x, 2, 2))
            x = getattr(self, f"re_de_conv_{size}")(x)
            stride = size // GRID
            transferred = transfer(attention, skip, 2 * stride, stride)
            transferred = getattr(self, f"re_de_att_{size}_2")(getattr(self, f"re_de_att_{size}_1")(transferred))
            x = torch.cat([transferred, x], dim=1)
        return self.re_de_toRGB__256(upsample_tf(x, 2, 2)).clamp(-1.0, 1.0), attention


class HiFillGenerator(nn.Module):
    """The TF ``build_generator`` at 512²: ``forward(x, mask) -> (refined, attention)``; x (B,3,512,512) in [-1,1]
    with the hole zeroed, mask (B,1,512,512) with 1 = hole; refined in [-1,1], not composited."""

    def __init__(self, softmax: str = "tf") -> None:
        super().__init__()
        self.coarse = CoarseNet()
        self.refine = RefineNet(softmax)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coarse = self.coarse(torch.cat([x, mask], dim=1))
        composited = coarse * mask + x * (1.0 - mask)
        return self.refine(torch.cat([composited, mask], dim=1), mask)


def tf_variable(key: str) -> str:
    """The TensorFlow checkpoint variable behind a ``HiFillGenerator`` state_dict key (the module docstring's table),
    e.g. ``refine.re_de_up__128.gate.weight`` → ``generator/re_de_up__128/re_de_up__128_conv/pw``."""
    part, layer, conv, kind = key.split(".")
    scope = f"generator/{layer}/{layer}_conv" if layer in UPSAMPLED else f"generator/{layer}"
    if part == "coarse":
        return f"{scope}_{conv}/" + ("w" if kind == "weight" else "biases")
    return scope + "/" + {("feat", "weight"): "w", ("feat", "bias"): "biases",
                          ("gate", "weight"): "pw", ("gate", "bias"): "ds_biases"}[conv, kind]


# --- contextual residual aggregation ---------------------------------------------------------------------------

def to_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B,C,H,W) → (B, grid², C·ph·pw): non-overlapping ph×pw patches (ph = H/grid, pw = W/grid), rank ≤ 5."""
    batch, channels, height, width = x.shape
    ph, pw = height // grid, width // grid
    x = x.reshape(batch * channels, grid, ph, grid, pw).permute(0, 1, 3, 2, 4)
    return x.reshape(batch, channels, grid * grid, ph * pw).transpose(1, 2).reshape(batch, grid * grid, -1)


def from_patches(tokens: torch.Tensor, channels: int, size: tuple[int, int], grid: int) -> torch.Tensor:
    """Inverse of :func:`to_patches`."""
    batch = tokens.shape[0]
    ph, pw = size[0] // grid, size[1] // grid
    x = tokens.reshape(batch, grid * grid, channels, ph * pw).transpose(1, 2)
    x = x.reshape(batch * channels, grid, grid, ph, pw).permute(0, 1, 3, 2, 4)
    return x.reshape(batch, channels, size[0], size[1])


class ContextualResidualAggregation(nn.Module):
    """Paper §3.1 and §3.2.3: ``up(LR out) + A @ residual patches``, the residual being the known image minus the
    upsampled LR input. Patches tile the image exactly (16kh×16kw on the 32×32 grid), so nothing overlaps.

    TF multiplies the residual by the known mask first; here that product would change nothing: a valid key's cell
    lies in a known LR box (the LR mask is max-pooled), so it holds known pixels only, and invalid keys weigh 0."""

    def forward(self, lr_result: torch.Tensor, lr_input: torch.Tensor, known_image: torch.Tensor,
                attention: torch.Tensor) -> torch.Tensor:
        height, width = known_image.shape[-2:]
        fh, fw = height // lr_result.shape[-2], width // lr_result.shape[-1]
        residual = known_image - upsample_tf(lr_input, fh, fw)
        aggregated = from_patches(attention @ to_patches(residual, GRID), residual.shape[1], (height, width), GRID)
        return upsample_tf(lr_result, fh, fw) + aggregated


class HiFill(InpaintingPipeline):
    """The HiFill pipeline: ``forward(image, mask)`` at 512·kh × 512·kw (image in [0,1], mask 1 = hole); the
    generator at 512², CRA to the input size in the same graph."""

    constraint = ResolutionConstraint(
        multiple_of=LR_SIZE, minimum=LR_SIZE, square=False,
        why="HiFill runs its generator at 512x512 and aggregates residuals by an integer factor per axis",
    )

    def __init__(self, softmax: str = "tf") -> None:
        super().__init__()
        self.net = HiFillGenerator(softmax)
        self.cra = ContextualResidualAggregation()

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        fh, fw = image.shape[-2] // LR_SIZE, image.shape[-1] // LR_SIZE
        known_image = image * (1.0 - mask)
        if (fh, fw) == (1, 1):
            mask_lr, image_lr = mask, known_image
        else:
            mask_lr = F.max_pool2d(mask, (fh, fw), (fh, fw))  # any hole pixel → hole: the hole's content is never read
            image_lr = F.avg_pool2d(known_image, (fh, fw), (fh, fw)) * (1.0 - mask_lr)
        refined, attention = self.net((image_lr * 2.0 - 1.0) * (1.0 - mask_lr), mask_lr)
        lr_result = (refined + 1.0) * 0.5
        if (fh, fw) == (1, 1):
            return lr_result
        return self.cra(lr_result, image_lr, known_image, attention)


FEAT_GAIN = 2.5  # seeded init: feature-conv gain over 1/√fan_in, which keeps activations near unit RMS (gates ≈ ½)
RGB_GAIN = 0.3  # the two toRGB convs: outputs spread in (-1, 1) instead of piling up at the clip


def init_weights(net: HiFillGenerator) -> HiFillGenerator:
    """Seeded random weights with trained-like scales (the global RNG; ``create_model`` seeds it): feature convs
    N(0, (:data:`FEAT_GAIN`/√fan_in)²), gates N(0, 1/fan_in), biases N(0, 0.1²). On ``make_inputs`` the coarse
    activations keep an RMS of 0.3-0.4 through all 26 layers and the refined image has std 0.3 in [-1,1] with
    under 1% clipped (gain 2.0 fades to a near-constant coarse output, 3.0 blows up in the decoder)."""
    for name, module in net.named_modules():
        if isinstance(module, GatedConv2d):
            gain = RGB_GAIN if name.endswith("toRGB") or name.endswith("toRGB__256") else FEAT_GAIN
            for conv, scale in ((module.feat, gain), (module.gate, 1.0)):
                fan_in = conv.weight[0].numel()
                nn.init.normal_(conv.weight, 0.0, scale / math.sqrt(fan_in))
                nn.init.normal_(conv.bias, 0.0, 0.1)
    return net


@register_model(
    "hifill",
    summary="HiFill (CVPR 2020): gated coarse-to-fine generator at 512, contextual residual aggregation to HR",
    constraint=HiFill.constraint,
    variants={"default": {}, "paper-softmax": {"softmax": "paper"}},
    paper_key=None,
    sweep_variants=("default",),
    in_default_sweep=False,
)
def hifill(softmax: str = "tf") -> HiFill:
    """Seeded random HiFill; ``softmax="paper"`` renormalises the attention over valid keys (paper Eq. 2)."""
    model = HiFill(softmax)
    init_weights(model.net)
    return model
