"""WavePaint (Jeevan, Kumar & Sethi, arXiv 2307.00407): WaveMix token mixing for inpainting, no attention, no GAN.

An independent re-implementation of ``remag2069/WaveMix-Inpainting@6da2b5e`` (``model.py``; the block is
``Level1Waveblock`` of ``pranavphoenix/WaveMix@ba3d1b4``, ``wavemix/__init__.py``) from ``reference/models.md`` §7,
built so that a checkpoint saved by the official training script loads with ``strict=True``: ``WavePaint.net``'s
state_dict has the official keys in the official order (288 keys and 6,690,608 parameters for the repository's
4 modules x 4 blocks at d = 128; 576 keys and 13,381,216 for 8 x 4, the configuration closest to the paper's "about
14M").

Native convention (the official ``wavepaint.py`` and ``WavePaint.forward``): image in [0,1] already masked by the
caller (``img * (1 - mask)``), mask 1 = hole; no output activation; the network composites ``x·m + img·(1−m)``
itself. The pipeline zeroes the hole before the network, so hole content cannot reach the output. Data flow:

1. ``x = img``; per module ``x = module(x, mask) + x``:
   - stem on ``cat[x, mask]``: 3×3 conv 4→d/2, then 3×3 stride-2 conv d/2→d (no norm or activation) = ``skip``;
   - B residual Waveblocks at H/2 (:class:`Waveblock`): 1×1 d→d/4, Haar DWT to d channels at H/4, 1×1 d→2d, GELU,
     (dropout), 1×1 2d→d, ``ConvTranspose2d(d, d, 4, 2, 1)`` back to H/2, BatchNorm;
   - depthwise 5×5, GELU, BatchNorm; ``cat[·, skip]``; ``ConvTranspose2d(2d, d/2, 4, 2, 1)`` + BatchNorm to H;
     ``cat[·, x]``; 1×1 conv (d/2 + 3)→3, no activation;
2. composite ``x·m + img·(1−m)``.

Inference forms:

- the Haar DWT (pywt ``db1``, zero mode; exact for even sizes) is two fixed grouped stride-2 convs, one for LL and
  one for the three detail bands, concatenated in the official channel order (:class:`HaarDWT`) instead of the
  official autograd ``Function`` with its module-level filter globals (not in the state_dict, not exportable);
- GELU is exact (ONNX ``Erf``; Core ML ``gelu`` EXACT; TensorRT's ONNX parser has ``Erf``) except for QNN, whose
  ONNX converter takes ``Erf`` only where it matches a whole GeLU pattern (Qualcomm's supported-ONNX-ops table):
  there the tanh approximation is exported (``gelu="tanh"``, chosen per target by the registry's ``forms``). On the
  whole model at 256² the two forms differ by at most 9.5e-5 (4×4) and 1.7e-4 (8×4), 2.2e-5 and 2.4e-5 on average
  over the hole (seeded weights, ``make_inputs(256, 256)``): below fp16's own rounding;
- deploy folds the BatchNorm after each ``ConvTranspose2d`` into it (the generic folder) and turns the BatchNorm
  after the depthwise conv's GELU, which no conv precedes, into a per-channel scale and shift
  (:meth:`WaveMixModule.reparameterize`; a depthwise 1×1 conv, what every backend lowers a BatchNorm to anyway).

Measured on the deploy form (``measure.flops.work_counts``): 4×4 6,686,000 parameters (BatchNorms folded),
181.9 fvcore GMACs at 512² and 727.5 at 1024² (``reference/models.md`` counts 181.3 on the official code, whose DWT
fvcore does not see); 8×4 13,372,000 parameters, 363.7 and 1455.0 GMACs. ONNX (opset 18) at 1024²: max abs error
7.7e-7 against PyTorch in ONNX Runtime.

Not reproduced: training (LPIPS + L1 + MSE on LaMa's masks) and the official DWT's hand-written backward; its zero
padding of odd sizes never applies, since the official network, and so this pipeline, takes multiples of 4 only.
Dropout (0.5) stays in the layout as the official ``nn.Dropout``, inactive in eval and absent from exports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .pipeline import InpaintingPipeline
from .registry import ResolutionConstraint, register_model

DIM = 128  # ff_channel = final_dim = MODEL_EMBEDDING of the official training script
MULT = 2  # width of the Waveblock's 1×1 MLP, in multiples of d
DROPOUT = 0.5  # the official training setting; no parameters, inactive in eval
GELU_FORMS = {"exact": "none", "tanh": "tanh"}  # our name → ``nn.GELU(approximate=...)``
TANH_GELU_TARGETS = ("qnn",)  # export targets that take Erf only inside a matched GeLU pattern
# seeded init (see init_weights): RMS of each module's RGB residual, and the hole fill's mean level
RESIDUAL_RMS = 0.15
FILL_LEVEL = 0.5


def gelu_form(target: str) -> str:
    """The GELU form exported to ``target``: ``"tanh"`` where the target lacks a standalone ``Erf``, else exact."""
    return "tanh" if target in TANH_GELU_TARGETS else "exact"


def _gelu(form: str) -> nn.GELU:
    if form not in GELU_FORMS:
        raise ValueError(f"gelu must be one of {tuple(GELU_FORMS)}, not {form!r}")
    return nn.GELU(approximate=GELU_FORMS[form])


def haar_kernels(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped-conv kernels of the one-level Haar DWT: LL (C,1,2,2) and the detail bands (3C,1,2,2).

    On a 2×2 block ``[[a, b], [c, d]]``: LL = (a+b+c+d)/2, b0 = (a+b−c−d)/2, b1 = (a−b+c−d)/2, b2 = (a−b−c+d)/2
    (pywt ``db1`` as ``DWTForward`` applies it). Detail output channels are channel-major (c0.b0, c0.b1, c0.b2,
    c1.b0, …), as the official ``reshape(Yh, (b, 3c, h, w))``.
    """
    low = torch.full((channels, 1, 2, 2), 0.5)
    bands = 0.5 * torch.tensor([[[1.0, 1.0], [-1.0, -1.0]],
                                [[1.0, -1.0], [1.0, -1.0]],
                                [[1.0, -1.0], [-1.0, 1.0]]])
    return low, bands.repeat(channels, 1, 1).unsqueeze(1)


class HaarDWT(nn.Module):
    """One-level 2-D Haar DWT as fixed stride-2 grouped convs: (B,C,H,W) → (B,4C,H/2,W/2) = [LL (C), details (3C)].

    The kernels are non-persistent buffers: constants of the graph, absent from the state_dict (as the official
    filters are), so released checkpoints load strictly.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        low, high = haar_kernels(channels)
        self.register_buffer("low", low, persistent=False)
        self.register_buffer("high", high, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.conv2d(x, self.low, stride=2, groups=self.channels)
        high = F.conv2d(x, self.high, stride=2, groups=self.channels)
        return torch.cat([low, high], dim=1)


class Waveblock(nn.Module):
    """The official ``Level1Waveblock`` (without its residual, which the caller adds) at d channels, H/2 × W/2.

    ``reduction`` (1×1 d→d/4) → Haar DWT (d channels at H/4) → ``feedforward``: 1×1 d→2d, GELU, dropout, 1×1 2d→d,
    ``ConvTranspose2d(d, d, 4, 2, 1)``, BatchNorm. ``feedforward`` is registered first, as in the official class,
    so the state_dict lists it before ``reduction``.
    """

    def __init__(self, dim: int, mult: int = MULT, dropout: float = DROPOUT, gelu: str = "exact") -> None:
        super().__init__()
        self.feedforward = nn.Sequential(
            nn.Conv2d(dim, dim * mult, 1),
            _gelu(gelu),
            nn.Dropout(dropout),
            nn.Conv2d(dim * mult, dim, 1),
            nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1),
            nn.BatchNorm2d(dim),
        )
        self.reduction = nn.Conv2d(dim, dim // 4, 1)
        self.dwt = HaarDWT(dim // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feedforward(self.dwt(self.reduction(x)))


class WaveMixModule(nn.Module):
    """The official ``WaveMixModule``: ``forward(x, mask)`` on the current RGB estimate, returns an RGB residual."""

    def __init__(self, dim: int, depth: int, mult: int = MULT, dropout: float = DROPOUT,
                 gelu: str = "exact") -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(4, dim // 2, 3, 1, 1),
            nn.Conv2d(dim // 2, dim, 3, 2, 1),
        )
        self.layers = nn.ModuleList(Waveblock(dim, mult, dropout, gelu) for _ in range(depth))
        self.depthconv = nn.Sequential(
            nn.Conv2d(dim, dim, 5, padding=2, groups=dim),
            _gelu(gelu),
            nn.BatchNorm2d(dim),
        )
        self.decoder1 = nn.Sequential(
            nn.ConvTranspose2d(dim * 2, dim // 2, 4, stride=2, padding=1),
            nn.BatchNorm2d(dim // 2),
        )
        self.decoder2 = nn.Sequential(nn.Conv2d(dim // 2 + 3, 3, 1))
        self.is_reparameterized = False

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        skip = self.conv(torch.cat([x, mask], dim=1))
        features = skip
        for block in self.layers:
            features = block(features) + features
        features = self.decoder1(torch.cat([self.depthconv(features), skip], dim=1))
        return self.decoder2(torch.cat([features, x], dim=1))

    def reparameterize(self) -> None:
        """Deploy form: the BatchNorm after the depthwise conv's GELU becomes the equal depthwise 1×1 conv.

        It follows a GELU, not a conv, and the conv after it (``decoder1``, behind a concat) is transposed with a
        padded border, where a constant input shift does not give a constant output shift: it cannot be folded
        away exactly. The other BatchNorms follow a conv and are left to the generic folder.
        """
        bn = self.depthconv[2]
        scale = bn.weight.detach() * torch.rsqrt(bn.running_var + bn.eps)
        affine = nn.Conv2d(bn.num_features, bn.num_features, 1, groups=bn.num_features)
        with torch.no_grad():
            affine.weight.copy_(scale.view(-1, 1, 1, 1))
            affine.bias.copy_(bn.bias.detach() - bn.running_mean * scale)
        self.depthconv[2] = affine
        self.is_reparameterized = True


class WavePaintNet(nn.Module):
    """The native network: the official ``WavePaint`` module's state_dict and ``forward`` semantics.

    ``forward(image, mask)``: image (B,3,H,W) in [0,1] with the hole already zeroed, mask (B,1,H,W) with 1 = hole;
    H and W multiples of 4. Returns the composited result (not clamped).
    """

    def __init__(self, num_modules: int = 4, blocks_per_module: int = 4, dim: int = DIM, mult: int = MULT,
                 dropout: float = DROPOUT, gelu: str = "exact") -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"WavePaint needs d divisible by 4, not {dim}")
        self.wavemodules = nn.ModuleList(WaveMixModule(dim, blocks_per_module, mult, dropout, gelu)
                                         for _ in range(num_modules))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = image
        for module in self.wavemodules:
            x = module(x, mask) + x
        return x * mask + image * (1.0 - mask)


class WavePaint(InpaintingPipeline):
    """The WavePaint pipeline: ``forward(image, mask)`` with image in [0,1] and mask 1 = hole (rbench contract)."""

    constraint = ResolutionConstraint(
        multiple_of=4, minimum=32,
        why="WavePaint halves the input with a stride-2 conv and again with the Haar DWT, then doubles it twice",
    )

    def __init__(self, num_modules: int = 4, blocks_per_module: int = 4, dim: int = DIM,
                 gelu: str = "exact") -> None:
        super().__init__()
        self.net = WavePaintNet(num_modules, blocks_per_module, dim, gelu=gelu)

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(image * (1.0 - mask), mask)  # as the official script: the hole is zeroed first


def init_weights(net: WavePaintNet) -> WavePaintNet:
    """Seeded random weights with trained-like activation scales (the global RNG; ``create_model`` seeds it).

    - convs and transposed convs: normal with std 1/√fan_in (fan-in of a transposed conv: its taps per output
      pixel), ×√2 after a GELU, zero bias, so each layer keeps its input's RMS;
    - each Waveblock's transposed conv is scaled by 1/√(2·B): the B residual blocks add up to about 1.6× the stem's
      RMS instead of doubling it per block;
    - each module's RGB head (``decoder2``) gives a residual of RMS about :data:`RESIDUAL_RMS`, and the first
      module's bias lifts the zeroed hole to :data:`FILL_LEVEL`, so the fill is a spread of colours around
      mid-grey, hardly clamped, rather than a black hole or a saturated one.
    """
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                module.weight.normal_(0.0, 1.0 / math.sqrt(_fan_in(module)))
                module.bias.zero_()
    with torch.no_grad():
        for wavemodule in net.wavemodules:
            for block in wavemodule.layers:
                block.feedforward[3].weight.mul_(math.sqrt(2.0))
                block.feedforward[4].weight.mul_(1.0 / math.sqrt(2.0 * len(wavemodule.layers)))
            wavemodule.decoder2[0].weight.mul_(RESIDUAL_RMS)
        net.wavemodules[0].decoder2[0].bias.fill_(FILL_LEVEL)
    return net


def _fan_in(conv: nn.Conv2d | nn.ConvTranspose2d) -> int:
    """Input taps per output pixel; a transposed conv reaches (kernel / stride)² of its kernel's taps per pixel."""
    if isinstance(conv, nn.Conv2d):
        return conv.weight[0].numel()
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    return conv.in_channels // conv.groups * (kh // sh) * (kw // sw)


@register_model(
    "wavepaint",
    summary="WavePaint (2023): WaveMix Haar-DWT token mixing, no attention, H/2 U-Net modules in series",
    constraint=WavePaint.constraint,
    variants={"4x4": {"num_modules": 4, "blocks_per_module": 4},
              "8x4": {"num_modules": 8, "blocks_per_module": 4}},
    forms=lambda variant, target: {"gelu": gelu_form(target)},
    in_default_sweep=False,
)
def wavepaint(num_modules: int = 4, blocks_per_module: int = 4, dim: int = DIM, gelu: str = "exact") -> WavePaint:
    """Seeded random WavePaint (see :func:`init_weights`); ``gelu="tanh"`` is the form exported to QNN."""
    model = WavePaint(num_modules, blocks_per_module, dim, gelu)
    init_weights(model.net)
    return model
