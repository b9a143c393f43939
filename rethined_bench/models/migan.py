"""MI-GAN (Sargsyan et al., ICCV 2023): the deployed inpainting generator and rbench's two pipelines around it.

**Generator.** An independent re-implementation of the deployed (inference) generator
``Picsart-AI-Research/MI-GAN@ca4df2eb:lib/model_zoo/migan_inference.py: Generator(resolution)``, written from
``reference/models.md`` §3 and checked against that file for structure and parameter order. Its ``state_dict()``
has the official keys, shapes and order (``synthesis.*`` then ``encoder.*``; 177 keys and 5,973,366 parameters at
R = 512, 154 keys and 5,943,617 at R = 256), so the released ``migan_512_*.pt`` / ``migan_256_*.pt`` checkpoints
load with ``strict=True``.

- Encoder: ``fromrgb`` (1×1, 4→ch, activation) in the first block, then per block two depthwise-separable convs,
  the second with a fixed [1,3,3,1] FIR stride-2 downsample; ``conv1``'s output is the skip at that resolution.
- Synthesis: a StyleGAN2 "skip" decoder without mapping network or modulation; every block ``r ≥ 8`` upsamples in
  ``conv1``, adds the encoder skip, adds a fixed noise map after each pointwise conv, and accumulates
  ``img = up(img) + torgb(x)``. There is no output activation (nominally [-1, 1]).
- Activation: ``clamp(leaky_relu(x, 0.2)·√2, ±256)`` everywhere except ``torgb``.
- Native convention: input ``cat([m − 0.5, img·m])`` (mask channel first), image in [-1, 1], mask 1 = known.

**Already the inference form.** MI-GAN trains each conv as a sum of 9 kernels with per-filter weight
normalisation (``lib/model_zoo/migan.py``); ``scripts/export_inference_model.py`` sums and normalises them, so the
released checkpoint *is* the deploy form and :func:`rethined_bench.optimize.deploy` has nothing to fold here (it
returns an equal copy). A consequence used for the seeded weights: every deployed conv weight has unit L2 norm per
output filter.

**Export-friendly formulation** (models.md §3.7), numerically equal to the official one:

- ``Upsample2d`` is nearest ×2 followed by a fixed 3×3 ``[1,2,1]⊗[1,2,1]/16`` depthwise conv. The official
  nearest-×2 · ``filter_const`` (zero insertion) → pad (2,1,2,1) → 4×4 ``[1,3,3,1]`` depthwise conv computes the
  same thing, since ``[1,3,3,1] = [1,2,1] * [1,1]``, with 16 instead of 9 taps per output pixel and an extra
  full-resolution multiply. ``filter_const`` stays a buffer only so checkpoints load; nothing depends on R.
- Noise is the checkpoint's ``noise_const · noise_strength``: a constant bias map at the native R (random noise is
  training-only).
- The activation's √2 gain is applied to the weights and bias of the conv before it (and to the noise, which
  lies between them with the linear up/downsampling): constants after export, so no full-resolution ``Mul``
  remains (``leaky_relu`` is positively homogeneous; the clamp at ±256 stays after it, as in the official code).
- No in-place ops, no ``F.pad``, no bool ``Where``, no data-dependent shapes.
- Together, the upsampler and the folded gain make the generator 0.85× the official one's latency in ONNX Runtime
  (``benchmarks/vs_official.py``: both exported the same way, same weights, outputs equal to 1.2e-5, CPU fp32,
  2 threads, 7 interleaved rounds).

**Pipelines** (rbench contract: image in [0,1], mask 1 = hole, output composited at the input resolution):

- ``resize`` (default; the RETHINED paper's protocol, "infer at the trained 512x512 and upsample to the target
  resolution"): area-downsample the image by the integer factor HR/R (``avg_pool2d``), mark an R-pixel as hole if
  any HR pixel under it is (``max_pool2d``; the official demo uses nearest, which can drop thin strokes), run the
  generator, bilinear-upsample to HR, composite with the known HR pixels. Needs H and W to be multiples of R;
  exports as one fixed-shape graph (ONNX opset 13 and 18, Core ML via ``torch.export``).
- ``crop`` (the official deployment, ``scripts/create_onnx_pipeline.py``): a window of side
  ``max(hole bbox) + 2·margin`` (at least R) centred on the hole's bounding box and shifted inside the image; area
  resize to R×R, run, bilinear resize back, feathered blend (3×3 dilation of the known region, then the official
  5×5 blur), paste. As in the official pipeline the feather mixes the input's own pixels into a ring of about
  2 px inside the hole border. The crop is data-dependent, so the crop and paste run on the host in PyTorch; the
  exported part is the generator at R×R, i.e. the ``resize`` variant at R×R. Exporting the ``crop`` variant itself
  raises a clear :class:`~rethined_bench.errors.RbenchError`.

Paper numbers (``paper_claims.toml``): RETHINED Table 3 gives 5.95M parameters, which lies within 0.5% of both
real generators and equals neither, and 11.19 (G) fvcore FLOPs at 2048, which matches MI-GAN-256 counted with the
repository's ``scripts/calculate_flops.py`` handles (11.20 G; MI-GAN-512 is 15.72 G), not the 512 generator the
paper says it ran.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RbenchError
from .pipeline import InpaintingPipeline
from .registry import ResolutionConstraint, register_model

ACT_SLOPE = 0.2
ACT_GAIN = math.sqrt(2.0)
ACT_CLAMP = 256.0
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)
BLUR_TAPS = (1.0, 2.0, 1.0)  # FIR_TAPS = BLUR_TAPS * [1, 1]: nearest ×2 then this blur is the FIR upsampler
CHANNEL_BASE = 32768  # channels at resolution r: min(CHANNEL_BASE // r, CHANNEL_MAX), as the official Generator
CHANNEL_MAX = 512
RGB_CHANNELS = 3
INPUT_CHANNELS = 4  # mask − 0.5, then RGB·mask
GENERATOR_RESOLUTIONS = (256, 512)  # the released checkpoints
CROP_MARGIN = 128  # official create_onnx_pipeline.py: MIGAN_Pipeline(padding=128)
FEATHER_TAPS = 5  # official: GaussianSmoothing(channels=1, kernel_size=5, sigma=1.0)
FEATHER_SIGMA = 1.0


def gained_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)·√2`` with the activation's gain on the weights and bias: constants after export, no ``Mul``."""
    bias = conv.bias * ACT_GAIN if conv.bias is not None else None
    return F.conv2d(x, conv.weight * ACT_GAIN, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def lrelu_clamp(x: torch.Tensor) -> torch.Tensor:
    """The official ``lrelu_agc(alpha=0.2, gain='sqrt_2', clamp=256)`` on an input that already carries the gain.

    ``leaky_relu(x)·√2 = leaky_relu(√2·x)``, so ``clamp(leaky_relu(x)·√2, ±256) = lrelu_clamp(√2·x)``.
    """
    return F.leaky_relu(x, ACT_SLOPE).clamp(-ACT_CLAMP, ACT_CLAMP)


def channels_at(resolution: int) -> int:
    return min(CHANNEL_BASE // resolution, CHANNEL_MAX)


def fir_kernel(channels: int, gain: float) -> torch.Tensor:
    """(C,1,4,4) depthwise FIR: ``outer([1,3,3,1])`` normalised to sum 1, times ``gain`` (official ``setup_filter``)."""
    taps = torch.tensor(FIR_TAPS)
    kernel = torch.outer(taps, taps)
    kernel = kernel / kernel.sum() * gain
    return kernel.expand(channels, 1, 4, 4).clone()


class Downsample2d(nn.Module):
    """Fixed [1,3,3,1] depthwise 4×4, stride 2, padding 1; the taps live in ``filter.weight`` as in the checkpoint."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.filter = nn.Conv2d(channels, channels, 4, stride=2, padding=1, groups=channels, bias=False)
        with torch.no_grad():
            self.filter.weight.copy_(fir_kernel(channels, gain=1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.filter(x)


class Upsample2d(nn.Module):
    """×2 upsampling with the fixed [1,3,3,1] FIR (gain 4), computed as nearest ×2 then a 3×3 [1,2,1] blur.

    In one dimension the official zero-insert → pad (2, 1) → taps ``[1,3,3,1]/4`` gives ``out[2s] = (x[s-1] +
    3·x[s])/4`` and ``out[2s+1] = (3·x[s] + x[s+1])/4``; nearest ×2 (``y[p] = x[p//2]``) then ``[1,2,1]/4`` with
    zero padding gives the same at every position, borders included. In ONNX Runtime this Resize + depthwise
    Conv beats both the official form and the other exact rewrites (a grouped ConvTranspose, and a polyphase
    Conv + DepthToSpace whose DepthToSpace alone cost a quarter of the generator), see ``benchmarks/vs_official.py``.

    The identity needs the FIR to be the fixed one. MI-GAN's training code keeps it a buffer
    (``setup_filter([1,3,3,1])``), so released checkpoints carry exactly these taps in ``filter.weight``; loading
    one that does not raises instead of silently computing something else. ``filter_const`` is the official
    zero-insertion pattern at the output resolution, kept only so that checkpoints load strictly.
    """

    def __init__(self, channels: int, resolution: int) -> None:
        super().__init__()
        pattern = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).repeat(resolution // 2, resolution // 2)
        self.register_buffer("filter_const", pattern.view(1, 1, resolution, resolution))
        self.filter = nn.Conv2d(channels, channels, 4, groups=channels, bias=False)
        with torch.no_grad():
            self.filter.weight.copy_(fir_kernel(channels, gain=4.0))
        taps = torch.tensor(BLUR_TAPS)
        blur = torch.outer(taps, taps) / taps.sum() ** 2
        self.register_buffer("blur", blur.expand(channels, 1, 3, 3).clone(), persistent=False)
        self.register_load_state_dict_post_hook(_require_fixed_fir)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), self.blur, padding=1, groups=x.shape[1])


def _require_fixed_fir(module: Upsample2d, _incompatible_keys: object) -> None:
    expected = fir_kernel(module.filter.out_channels, gain=4.0)
    if not torch.allclose(module.filter.weight, expected, rtol=0, atol=1e-7):
        raise RuntimeError("an Upsample2d filter.weight is not MI-GAN's fixed [1,3,3,1] FIR (gain 4); every "
                           "released checkpoint has it, so this file is not an MI-GAN generator checkpoint")


class SeparableConv2d(nn.Module):
    """``act → [down] → pw 1×1 → [up] → [+ noise] → act`` after a depthwise 3×3 with bias (official order)."""

    def __init__(self, in_channels: int, out_channels: int, *, down: bool = False, up: bool = False,
                 noise_resolution: int | None = None) -> None:
        super().__init__()
        self.use_noise = noise_resolution is not None
        if self.use_noise:
            # registered before the child convs so the keys come first, as in the checkpoint
            self.noise_strength = nn.Parameter(torch.zeros([]))
            self.register_buffer("noise_const", torch.randn(noise_resolution, noise_resolution))
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=True)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.downsample = Downsample2d(in_channels) if down else None
        self.upsample = Upsample2d(out_channels, noise_resolution) if up and noise_resolution else None
        if up and self.upsample is None:
            raise ValueError("an upsampling SeparableConv2d needs its output resolution (noise_resolution)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = lrelu_clamp(gained_conv(self.conv1, x))
        if self.downsample is not None:
            x = self.downsample(x)
        x = gained_conv(self.conv2, x)  # the second activation's gain, carried through the linear ops below
        if self.upsample is not None:
            x = self.upsample(x)
        if self.use_noise:
            x = x + self.noise_const * (self.noise_strength * ACT_GAIN)
        return lrelu_clamp(x)


class EncoderBlock(nn.Module):
    """``[fromrgb] → conv1 (the skip) → conv2 (↓2 unless last)``; returns ``(x, skip)``."""

    def __init__(self, in_channels: int, out_channels: int, *, from_rgb: bool, down: bool) -> None:
        super().__init__()
        self.fromrgb = nn.Conv2d(INPUT_CHANNELS, in_channels, 1) if from_rgb else None
        self.conv1 = SeparableConv2d(in_channels, in_channels)
        self.conv2 = SeparableConv2d(in_channels, out_channels, down=down)

    def forward(self, x: torch.Tensor | None, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fromrgb is not None:
            y = lrelu_clamp(gained_conv(self.fromrgb, image))
            x = y if x is None else x + y
        if x is None:
            raise ValueError("the first encoder block needs fromrgb")
        skip = self.conv1(x)
        return self.conv2(skip), skip


class Encoder(nn.Module):
    """Blocks ``b{R}, …, b8`` (each halves the resolution) and ``b4`` (no downsampling), as ``Encoder(R)``."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.resolutions = [2**i for i in range(int(math.log2(resolution)), 1, -1)]  # R, R/2, ..., 4
        for index, (res, next_res) in enumerate(zip(self.resolutions[:-1], self.resolutions[1:])):
            block = EncoderBlock(channels_at(res), channels_at(next_res), from_rgb=index == 0, down=True)
            setattr(self, f"b{res}", block)
        self.b4 = EncoderBlock(channels_at(4), channels_at(4), from_rgb=False, down=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        x, skips = None, {}
        for res in self.resolutions:
            x, skips[res] = getattr(self, f"b{res}")(x, image)
        return x, skips


class SynthesisBlockFirst(nn.Module):
    """``b4``: two separable convs around the 4×4 skip (no noise, no upsampling) and ``torgb``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = SeparableConv2d(channels, channels)
        self.conv2 = SeparableConv2d(channels, channels)
        self.torgb = nn.Conv2d(channels, RGB_CHANNELS, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv2(self.conv1(x) + skip)
        return x, self.torgb(x)


class SynthesisBlock(nn.Module):
    """``b{r}``: ``conv1`` (↑2, noise) + skip → ``conv2`` (noise); ``img = up(img) + torgb(x)``."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int) -> None:
        super().__init__()
        self.conv1 = SeparableConv2d(in_channels, out_channels, up=True, noise_resolution=resolution)
        self.conv2 = SeparableConv2d(out_channels, out_channels, noise_resolution=resolution)
        self.torgb = nn.Conv2d(out_channels, RGB_CHANNELS, 1)
        self.upsample = Upsample2d(RGB_CHANNELS, resolution)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, image: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv2(self.conv1(x) + skip)
        return x, self.upsample(image) + self.torgb(x)


class Synthesis(nn.Module):
    """``b4, b8, …, b{R}``, as ``Synthesis(R)``."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]  # 4, 8, ..., R
        self.b4 = SynthesisBlockFirst(channels_at(4))
        for res, next_res in zip(self.resolutions[:-1], self.resolutions[1:]):
            setattr(self, f"b{next_res}", SynthesisBlock(channels_at(res), channels_at(next_res), next_res))

    def forward(self, x: torch.Tensor, skips: dict[int, torch.Tensor]) -> torch.Tensor:
        x, image = self.b4(x, skips[4])
        for res in self.resolutions[1:]:
            x, image = getattr(self, f"b{res}")(x, skips[res], image)
        return image


class Generator(nn.Module):
    """The deployed MI-GAN generator at ``resolution`` (256 or 512): (B,4,R,R) → (B,3,R,R), native convention."""

    def __init__(self, resolution: int = 512) -> None:
        super().__init__()
        if resolution not in GENERATOR_RESOLUTIONS:
            raise ValueError(f"MI-GAN generator resolution must be one of {GENERATOR_RESOLUTIONS}, not {resolution}")
        self.resolution = resolution
        self.synthesis = Synthesis(resolution)  # registered first: checkpoint order is synthesis.* then encoder.*
        self.encoder = Encoder(resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bottleneck, skips = self.encoder(x)
        return self.synthesis(bottleneck, skips)


def init_deployed_weights(net: Generator, *, bias_std: float = 0.05, noise_strength: tuple[float, float] = (0.01, 0.1)
                          ) -> None:
    """Seeded random weights shaped like a released checkpoint (uses the global torch RNG).

    Every conv weight is a random direction with unit L2 norm per output filter (what export leaves of the trained
    kernels); biases are small; ``noise_const`` is N(0,1) (the official init) and ``noise_strength`` small but
    nonzero, so the noise path is exercised; the FIR taps and ``filter_const`` keep their exact fixed values.
    Features stay at an RMS of about 1 through the network (the activation clamp never fires), but random
    ``torgb`` directions make the raw output span about ±5 instead of a trained model's [-1, 1]: roughly a
    quarter of the pixels land inside [0, 1] after conversion, the rest are clamped by the composite.
    """
    fixed = {id(m.filter) for m in net.modules() if isinstance(m, (Downsample2d, Upsample2d))}
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d) and id(module) not in fixed:
                weight = torch.randn_like(module.weight)
                module.weight.copy_(weight / weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
                if module.bias is not None:
                    module.bias.normal_(0.0, bias_std)
            elif isinstance(module, SeparableConv2d) and module.use_noise:
                module.noise_const.normal_()
                module.noise_strength.uniform_(*noise_strength)


def hole_crop_box(hole: torch.Tensor, resolution: int, margin: int = CROP_MARGIN) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the official crop around the hole of a (H,W) mask (1 = hole).

    As ``create_onnx_pipeline.py``'s ``get_masked_bbox``: a square of side ``max(bbox h, bbox w) + 2·margin``, at
    least ``resolution``, centred on the hole's bounding box, shifted to lie inside the image and clipped where
    the image is smaller. An image without a hole gives the whole image.
    """
    height, width = hole.shape
    rows = torch.nonzero(hole.amax(dim=1) > 0.5).flatten()
    cols = torch.nonzero(hole.amax(dim=0) > 0.5).flatten()
    if rows.numel() == 0:
        return 0, height, 0, width
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(y1 - y0, x1 - x0) + 2 * margin
    side = max(side, resolution)

    def window(lo: int, hi: int, size: int) -> tuple[int, int]:
        start = (lo + hi) // 2 - side // 2
        start = min(max(start, 0), max(size - side, 0))
        return start, min(start + side, size)

    return (*window(y0, y1, height), *window(x0, x1, width))


def feather_taps() -> torch.Tensor:
    """The official 5-tap blur: ``exp(−(d/(2σ))²)`` normalised (a Gaussian of std σ·√2), σ = 1."""
    d = torch.arange(FEATHER_TAPS, dtype=torch.float64) - FEATHER_TAPS // 2
    taps = torch.exp(-((d / (2 * FEATHER_SIGMA)) ** 2))
    return (taps / taps.sum()).float()


def feather_alpha(known: torch.Tensor) -> torch.Tensor:
    """Blend weight of the original pixels: 3×3 dilation of the known region, then the 5×5 blur (reflect padding)."""
    alpha = F.max_pool2d(known, 3, stride=1, padding=1)
    taps = feather_taps().to(known)
    pad = FEATHER_TAPS // 2
    alpha = F.conv2d(F.pad(alpha, (pad, pad, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
    return F.conv2d(F.pad(alpha, (0, 0, pad, pad), mode="reflect"), taps.view(1, 1, -1, 1))


class MIGAN(InpaintingPipeline):
    """MI-GAN behind the rbench contract; ``.net`` is the official-layout :class:`Generator`.

    ``mode="resize"``: any H, W that are multiples of R (fixed-shape export). ``mode="crop"``: the official
    crop-around-the-hole deployment, any size of at least R; its crop and paste run on the host (not exportable).
    """

    def __init__(self, resolution: int = 512, mode: str = "resize", crop_margin: int = CROP_MARGIN) -> None:
        super().__init__()
        if mode not in ("resize", "crop"):
            raise ValueError(f"mode must be 'resize' or 'crop', not {mode!r}")
        self.mode, self.crop_margin = mode, crop_margin
        self.net = Generator(resolution)
        self.resolution = resolution
        if mode == "resize":
            self.constraint = ResolutionConstraint(
                multiple_of=resolution, minimum=resolution,
                why=f"MI-GAN runs at {resolution}x{resolution}; the resize pipeline scales by an integer factor",
            )
        else:
            self.constraint = ResolutionConstraint(
                multiple_of=1, minimum=resolution,
                why=f"the crop pipeline takes a window of at least {resolution}x{resolution} around the hole",
            )

    def generate(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """Run the generator at R×R: image in [0,1] and hole mask (1 = hole) in, image in [0,1] (unclamped) out."""
        known = 1.0 - hole
        x = torch.cat([known - 0.5, (image * 2.0 - 1.0) * known], dim=1)
        return self.net(x) * 0.5 + 0.5

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "resize":
            return self._inpaint_resize(image, mask)
        return self._inpaint_crop(image, mask)

    def _inpaint_resize(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        height, width = int(image.shape[-2]), int(image.shape[-1])
        factor = (height // self.resolution, width // self.resolution)
        if factor == (1, 1):
            return self.generate(image, mask)
        hole = F.max_pool2d(mask, factor, factor)  # an R-pixel is a hole if any pixel under it is
        small = F.avg_pool2d(image, factor, factor)  # area downsampling; hole pixels are masked in generate()
        filled = self.generate(small, hole)
        return F.interpolate(filled, size=(height, width), mode="bilinear", align_corners=False)

    def _inpaint_crop(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            raise RbenchError(
                "MI-GAN variant 'crop' crops around the hole on the host and has no fixed-shape graph; export "
                f"variant 'resize' at {self.resolution}x{self.resolution} (the generator the crop variant runs)"
            )
        return torch.cat([self._crop_one(image[i:i + 1], mask[i:i + 1]) for i in range(image.shape[0])])

    def _crop_one(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = hole_crop_box(mask[0, 0], self.resolution, self.crop_margin)
        crop_image = image[..., top:bottom, left:right]
        crop_hole = mask[..., top:bottom, left:right]
        size = (self.resolution, self.resolution)
        filled = self.generate(F.adaptive_avg_pool2d(crop_image, size), F.adaptive_max_pool2d(crop_hole, size))
        # clamped before resizing back, as the official postprocess (uint8 range) does
        filled = F.interpolate(filled.clamp(0.0, 1.0), size=crop_hole.shape[-2:], mode="bilinear",
                               align_corners=False)
        alpha = feather_alpha(1.0 - crop_hole)
        result = image.clone()
        result[..., top:bottom, left:right] = crop_image * alpha + filled * (1.0 - alpha)
        return result


def build_migan(resolution: int = 512, mode: str = "resize", crop_margin: int = CROP_MARGIN) -> MIGAN:
    """MI-GAN pipeline with seeded random weights shaped like a released checkpoint."""
    model = MIGAN(resolution, mode, crop_margin)
    init_deployed_weights(model.net)
    return model


@register_model(
    "migan",
    summary="MI-GAN (ICCV 2023): depthwise-separable encoder + skip decoder at 512, resized to the target",
    constraint=ResolutionConstraint(
        multiple_of=512, minimum=512,
        why="MI-GAN runs at 512x512; the resize pipeline scales by an integer factor",
    ),
    variants={"resize": {"mode": "resize"}, "crop": {"mode": "crop"}},
    paper_key="migan",
    sweep_variants=("resize",),  # "crop" crops and pastes on the host: no fixed-shape artifact to measure
    limits=lambda variant, target, device: (
        "MI-GAN variant 'crop' crops around the hole on the host and has no fixed-shape graph; export variant "
        "'resize' at 512x512 (the generator the crop variant runs)" if variant == "crop" else None),
)
def migan(**options) -> MIGAN:
    return build_migan(**options)
