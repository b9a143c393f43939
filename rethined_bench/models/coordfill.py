"""CoordFill (Liu et al., AAAI 2023): a 256² attention-FFC encoder predicts, for each of 32×32 cells, the weights of
a pixel MLP that paints that cell's k×k tile of the full-resolution output (k = H/32).

An independent re-implementation of ``NiFangBaAGe/CoordFill@989a393f`` (``models/coordfill.py``, ``models/ffc.py``,
``models/modules.py``) from ``reference/models.md`` §4, built so that the released checkpoint loads with
``strict=True``: ``CoordFill.net.state_dict()`` has the official 272 keys in the official order (including the 205
BatchNorm entries the official code constructs and never calls) and 31,637,010 parameters.

Native convention (the official ``forward``): image in [-1,1], mask 1 = known. Data flow:

1. image bilinear (no antialias; hole content included, as the official) and mask nearest to 256²;
   ``refine(cat[img·m, m])`` → (B,512,32,32): a LaMa stem
   and three stride-2 FFC convs, six attention-FFC blocks (:class:`AttFFC`), no decoder;
2. ``asap.lowres_stream``: append the constant channel ``32/W`` and apply ``Linear(513 → 12995)`` per cell;
3. ``asap.highres_stream``: a 5-layer MLP [4, 64, 64, 64, 64, 3] per cell over the in-tile position encoding of its
   k² pixels (LeakyReLU 0.01, tanh at the end); the image itself is not an MLP input;
4. composite: ``out·(1−m) + img·m``.

Inference form (the only form; it is what gets exported):

- the FourierUnit's FFT runs on the fixed 32×32 map as constant DFT matmuls (:mod:`.layers.dft`, no ONNX ``DFT``);
  ``fft="torch"`` keeps ``torch.fft`` as the reference it is tested against;
- the tiling is static reshapes and one rank-6 permute (no unfold, gather or scatter); the PE is one constant
  (k², 4) tile shared by all cells;
- the pixel MLP runs as batched GEMMs (cells, k², n_in + 1) × (cells, n_in + 1, n_out + 1), the long k² axis as
  the GEMM's M, with each layer's bias folded into its weight (:func:`augmented_weights`): a matmul and a LeakyReLU
  per layer and nothing else touches the k²-sized intermediates. Cells are evaluated in chunks so that one
  intermediate stays within :data:`CHUNK_BYTES` (one chunk up to 2048²: 1.1 GB; four at 4096²).

Measured against the official ``forward`` by ``benchmarks/vs_official.py`` (both exported the same way: dynamo,
opset 18, onnxsim; ONNX Runtime CPU fp32, 2 threads; same weights; 7 interleaved rounds): 0.83× its latency at
2048², outputs equal to 1.9e-6. ORT's profile puts 73% of our time in the per-pixel MLP, 21% in the encoder and
5% in the parameter generator (official: 73%, 22%, 4%).

Not reproduced: the official ``load_state_dict`` override, which silently ignores keys missing from a checkpoint
(rbench loads strictly), and ``mask_predict``'s data-dependent gather/scatter (its output equals ``forward``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FFCLayer
from .pipeline import InpaintingPipeline
from .registry import ResolutionConstraint, register_model

IN_SIZE = 256  # the encoder always runs at 256², whatever the output size
GRID = 32  # encoder output grid: one pixel MLP per cell
FEATURES = 512  # encoder channels: 128 local + 384 global (FFC ratio 0.75)
MLP_WIDTHS = (4, 64, 64, 64, 64, 3)  # PE (4) → 4 hidden layers of 64 → RGB
LEAKY_SLOPE = 0.01
GLOBAL_RATIO = 0.75  # FFC channel split of the encoder's bottleneck: 128 local + 384 global
RESIDUAL_GAIN = 0.25  # seeded init: scale of the last conv on each path of an AttFFC residual branch
CHUNK_BYTES = 5 * 2**28  # 1.25 GiB: the largest (cells, k², 65) fp32 MLP intermediate (2048²: one chunk)
NORM = "unused"  # the official code builds the FFC BatchNorms and never calls them (models.md §4.2)


class AttFFC(nn.Module):
    """Attention-FFC block on (128 local, 384 global) channels at 32².

    ``a = σ(FFC→1)``; ``(m_l, m_g) = ReLU(FFC(cat[x_l, x_g, a]))``; ``(o_l, o_g) = ReLU(FFC(x_l − m_l, x_g − m_g))``;
    output ``(x_l − m_l + o_l, x_g − m_g + o_g)``.
    """

    def __init__(self, channels: int, fft: str) -> None:
        super().__init__()
        self.add = FFCLayer(channels, channels, 3, GLOBAL_RATIO, GLOBAL_RATIO, padding=1, fft=fft, norm=NORM)
        self.minus = FFCLayer(channels + 1, channels, 3, 0.0, GLOBAL_RATIO, padding=1, fft=fft, norm=NORM)
        self.mask = FFCLayer(channels, 1, 3, GLOBAL_RATIO, 0.0, padding=1, activation="sigmoid", fft=fft, norm=NORM)

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attention, _ = self.mask(x_l, x_g)
        minus_l, minus_g = self.minus(torch.cat([x_l, x_g, attention], dim=1))
        x_l, x_g = x_l - minus_l, x_g - minus_g
        add_l, add_g = self.add(x_l, x_g)
        return x_l + add_l, x_g + add_g


class Encoder(nn.Module):
    """The official ``AttFFCResNetGenerator(512)``: (B,4,256,256) → (B,512,32,32), local channels first."""

    def __init__(self, fft: str) -> None:
        super().__init__()
        # index 0 is the stem's reflect pad, as in the official nn.Sequential, so the layers keep indices 1..4
        self.dowm = nn.ModuleList([
            nn.ReflectionPad2d(3),
            FFCLayer(4, 64, 7, fft=fft, norm=NORM),
            FFCLayer(64, 128, 4, stride=2, padding=1, fft=fft, norm=NORM),
            FFCLayer(128, 256, 4, stride=2, padding=1, fft=fft, norm=NORM),
            FFCLayer(256, FEATURES, 4, 0.0, GLOBAL_RATIO, stride=2, padding=1, fft=fft, norm=NORM),
        ])
        for i in range(1, 7):
            self.add_module(f"block{i}", AttFFC(FEATURES, fft))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_l, x_g = self.dowm[0](x), None
        for layer in self.dowm[1:]:
            x_l, x_g = layer(x_l, x_g)
        for i in range(1, 7):
            x_l, x_g = getattr(self, f"block{i}")(x_l, x_g)
        return torch.cat([x_l, x_g], dim=1)


def mlp_layout(widths: tuple[int, ...] = MLP_WIDTHS) -> list[tuple[int, int, int, int]]:
    """Per layer ``(bias_start, weight_start, n_in, n_out)`` in a cell's parameter vector.

    Each layer stores its bias (n_out) then its weight (n_in × n_out, row-major; the layer computes ``h @ W + b``):
    biases at 0, 320, 4480, 8640, 12800 and weights at 64, 384, 4544, 8704, 12803; 12,995 values in all.
    """
    layout, offset = [], 0
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layout.append((offset, offset + n_out, n_in, n_out))
        offset += n_out + n_in * n_out
    return layout


def mlp_param_count(widths: tuple[int, ...] = MLP_WIDTHS) -> int:
    return sum(n_out + n_in * n_out for n_in, n_out in zip(widths[:-1], widths[1:]))


def position_encoding(k: int) -> torch.Tensor:
    """The official in-tile PE as a (k², 4) float32 tile; row ``v·k + u`` is the pixel at row v, column u.

    Columns: ``cos/sin(2π·(7/8)·u/(k−1))`` and ``cos/sin(2π·(49/64)·k·v/(k−1)²)``. The y columns reproduce an
    upstream bug in ``_get_coords`` (it normalises the y phase starting from the already-normalised x vector, so the
    y phase peaks at 0.875·0.875·k/(k−1) instead of 0.875); the released weights were trained with it, so a
    weight-compatible model must keep it. Built from Python floats, so tracing and export see one constant.
    """
    if k < 2:
        raise ValueError(f"the position encoding needs tiles of at least 2×2 pixels, not {k}×{k}")
    x_phase = [2 * math.pi * (7 / 8) * u / (k - 1) for u in range(k)]
    y_phase = [2 * math.pi * (49 / 64) * k * v / (k - 1) ** 2 for v in range(k)]  # upstream bug, kept on purpose
    rows = [[math.cos(x_phase[u]), math.sin(x_phase[u]), math.cos(y_phase[v]), math.sin(y_phase[v])]
            for v in range(k) for u in range(k)]
    return torch.tensor(rows, dtype=torch.float32)


def augmented_weights(params: torch.Tensor, widths: tuple[int, ...] = MLP_WIDTHS) -> list[torch.Tensor]:
    """Per layer, each cell's weight with its bias folded in: ``[h, 1] @ [[W, 0], [b, 1]] = [h·W + b, 1]``.

    ``params`` is (cells, 12995). Hidden layers get (cells, n_in + 1, n_out + 1): the extra column carries the
    constant 1 to the next layer (LeakyReLU(1) = 1), so no layer needs a separate bias ``Add`` over its k²-sized
    output (measured in ONNX Runtime at 2048²: such broadcast ``Add``s take 40% as long as the GEMMs, the 65th
    output column about 15%). The last layer is returned transposed, (cells, 3, n_in + 1), so it writes the output
    channel-first.
    """
    layout = mlp_layout(widths)
    weights = []
    for i, (bias_start, weight_start, n_in, n_out) in enumerate(layout):
        weight = params[:, weight_start:weight_start + n_in * n_out].reshape(-1, n_in, n_out)
        weight = torch.cat([weight, params[:, bias_start:bias_start + n_out].unsqueeze(1)], dim=1)
        if i < len(layout) - 1:
            carry = torch.tensor([0.0] * n_in + [1.0], dtype=params.dtype, device=params.device)
            carry = carry.view(1, n_in + 1, 1).expand(weight.shape[0], n_in + 1, 1)
            weights.append(torch.cat([weight, carry], dim=2))
        else:
            weights.append(weight.transpose(1, 2))
    return weights


def chunk_cells(cells: int, k: int, width: int = max(MLP_WIDTHS) + 1, budget: int | None = None) -> int:
    """Cells per MLP chunk: ``cells`` halved until one (chunk, k², width) fp32 intermediate fits in ``budget``
    (default :data:`CHUNK_BYTES`)."""
    budget = CHUNK_BYTES if budget is None else budget
    step = cells
    while step > 1 and step * k * k * width * 4 > budget:
        step = (step + 1) // 2
    return step


class PixelMLP(nn.Module):
    """The official ``PixelQueryNet`` (no parameters of its own): run each cell's MLP over its k×k tile.

    ``forward(params, k)`` takes the cell-major parameters (B, 1024, 12995) and returns the tanh output
    (B, 3, 32k, 32k). Equivalent to the official unfold → 5-D matmul → fold, as batched GEMMs
    (cells, k², n_in + 1) × (cells, n_in + 1, n_out + 1) on one shared constant PE tile, with the biases folded in
    (:func:`augmented_weights`), and one reshape/permute from tiles back to the image.
    """

    def __init__(self, widths: tuple[int, ...] = MLP_WIDTHS) -> None:
        super().__init__()
        self.widths = widths

    def forward(self, params: torch.Tensor, k: int) -> torch.Tensor:
        batch, cells, _ = params.shape
        grid = math.isqrt(cells)
        weights = augmented_weights(params.reshape(batch * cells, -1), self.widths)
        tile = position_encoding(k).to(params)
        tile = torch.cat([tile, torch.ones_like(tile[:, :1])], dim=1)  # (k², 5): PE and the bias's constant 1
        step = chunk_cells(batch * cells, k)
        out = torch.cat([self._run(tile, [w[i:i + step] for w in weights])
                         for i in range(0, batch * cells, step)])  # (B·cells, 3, k²)
        out = out.reshape(batch, grid, grid, -1, k, k).permute(0, 3, 1, 4, 2, 5)  # (B, 3, row, v, col, u)
        return out.reshape(batch, -1, grid * k, grid * k)

    @staticmethod
    def _run(tile: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        h = tile
        for weight in weights[:-1]:
            h = F.leaky_relu(h @ weight, LEAKY_SLOPE, inplace=True)  # (cells, k², 65)
        return torch.tanh(weights[-1] @ h.transpose(1, 2))  # (cells, 3, k²)


class ParamGenerator(nn.Module):
    """The official ``ParaGenNet`` with scale injection: ``Linear(512 + 1 → 12995)`` per cell, where the extra
    channel is the constant ``32/W`` (encoder grid over output width)."""

    def __init__(self, num_params: int) -> None:
        super().__init__()
        self.out_para = nn.Sequential(nn.Linear(FEATURES + 1, num_params))

    def forward(self, features: torch.Tensor, out_width: int) -> torch.Tensor:
        """(B,512,32,32) → cell-major parameters (B, 1024, 12995)."""
        cells = features.flatten(2).transpose(1, 2)  # (B, 1024, 512)
        scale = torch.full_like(cells[..., :1], GRID / out_width)
        return self.out_para(torch.cat([cells, scale], dim=-1))


class HyperNet(nn.Module):
    """The official ``asap`` (``CoordFillGenerator``): parameter generator + pixel MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.highres_stream = PixelMLP()
        self.lowres_stream = ParamGenerator(mlp_param_count())


class CoordFillNet(nn.Module):
    """The native network: the official ``CoordFill`` module's state_dict and ``forward`` semantics.

    ``forward(image, known)``: image (B,3,H,W) in [-1,1], known (B,1,H,W) with 1 = known; H = W, a multiple of 32.
    Returns the composited result in [-1,1].
    """

    def __init__(self, fft: str = "matmul") -> None:
        super().__init__()
        self.asap = HyperNet()
        self.refine = Encoder(fft)

    def forward(self, image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if height != width or height % GRID:
            raise ValueError(f"CoordFillNet needs a square input, a multiple of {GRID}; got {height}x{width}")
        # as the official: the full image (hole content included) is resized, then masked at 256²
        lr_image = F.interpolate(image, size=(IN_SIZE, IN_SIZE), mode="bilinear", align_corners=False)
        lr_known = F.interpolate(known, size=(IN_SIZE, IN_SIZE), mode="nearest")
        features = self.refine(torch.cat([lr_image * lr_known, lr_known], dim=1))
        params = self.asap.lowres_stream(features, int(width))
        out = self.asap.highres_stream(params, int(height) // GRID)
        return out * (1.0 - known) + image * known


class CoordFill(InpaintingPipeline):
    """The CoordFill pipeline: ``forward(image, mask)`` with image in [0,1] and mask 1 = hole (rbench contract)."""

    constraint = ResolutionConstraint(
        multiple_of=GRID, minimum=IN_SIZE, square=True,
        why="CoordFill tiles a square output into 32x32 cells of kxk pixels, k = H/32 >= 8 as trained",
    )

    def __init__(self, fft: str = "matmul") -> None:
        super().__init__()
        self.net = CoordFillNet(fft)

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.net(image * 2.0 - 1.0, 1.0 - mask)
        return (out + 1.0) * 0.5


def init_weights(net: CoordFillNet) -> CoordFillNet:
    """Seeded random weights with trained-like activation scales (the global RNG; ``create_model`` seeds it).

    - convs: Kaiming-normal (ReLU gain); the last conv on each path of the ``add``/``minus`` residual branches is
      scaled by :data:`RESIDUAL_GAIN` (Fixup-style), so the six blocks keep the features at about unit RMS instead
      of growing ×2.3 per block;
    - parameter generator (a hypernetwork): its bias holds a shared base MLP and its weight a per-cell variation
      (std 0.2 of the base's), and the generated biases are about 0.1. The generated weights use gain 1.2/√n_in
      (1.5/√n_in for the tanh layer): with the full Kaiming √2 and more per-cell variation, cells fed by outlier
      features grow activations past 100 and amplify fp32 rounding of the encoder ~10⁴× (ORT-vs-PyTorch parity
      then hovers near 1e-4). The output is a spread of colours (std ≈ 0.17 in [0,1] on ``make_inputs``), not
      saturated, with hidden activations below 10.
    """
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    for block in net.modules():
        if isinstance(block, AttFFC):
            for branch in (block.add.ffc, block.minus.ffc):
                spectral = branch.convg2g.conv2 if branch.convg2g is not None else None
                for conv in (branch.convl2l, branch.convl2g, branch.convg2l, spectral):
                    if conv is not None:
                        conv.weight.data.mul_(RESIDUAL_GAIN)
    linear = net.asap.lowres_stream.out_para[0]
    per_cell = 0.2  # std of the cell-to-cell variation of the generated weights, relative to the shared base
    spread = 1.0 / math.sqrt(linear.in_features)  # the encoder features have about unit RMS
    layout = mlp_layout()
    with torch.no_grad():
        for i, (bias_start, weight_start, n_in, n_out) in enumerate(layout):
            gain = (1.2 if i < len(layout) - 1 else 1.5) / math.sqrt(n_in)
            rows = slice(weight_start, weight_start + n_in * n_out)
            linear.bias[rows].normal_(0.0, gain)
            linear.weight[rows].normal_(0.0, per_cell * gain * spread)
            rows = slice(bias_start, bias_start + n_out)
            linear.bias[rows].normal_(0.0, 0.1)
            linear.weight[rows].normal_(0.0, 0.1 * spread)
    return net


@register_model(
    "coordfill",
    summary="CoordFill (AAAI 2023): 256² attention-FFC encoder, per-cell pixel MLPs at full resolution",
    constraint=CoordFill.constraint,
    variants={"default": {}, "torch-fft": {"fft": "torch"}},
    paper_key="coordfill",
    sweep_variants=("default",),
    limits=lambda variant, target, device: (
        f"CoordFill variant 'torch-fft' keeps torch.fft.rfftn/irfftn, for which {target} has no op (why the "
        "paper could not export the official CoordFill to the Snapdragon 888); the default variant computes the "
        "same FFT as matmuls" if variant == "torch-fft" and target in ("tensorrt", "qnn") else None),
)
def coordfill(fft: str = "matmul") -> CoordFill:
    """Seeded random CoordFill (see :func:`init_weights`); ``fft="torch"`` is the reference FFT path."""
    model = CoordFill(fft)
    init_weights(model.net)
    return model
