"""LaMa (Suvorov et al., WACV 2022): a ResNet generator whose residual blocks are fast Fourier convolutions, so that
every block sees the whole image.

An independent re-implementation of the generator ``FFCResNetGenerator`` of
``advimman/lama@786f5936:saicinpainting/training/modules/ffc.py`` in its two released configurations, written from
``reference/models.md`` §5 so that the generator's ``state_dict()`` has the official keys, shapes and order:
``lama`` variant ``fourier`` (``configs/training/lama-fourier.yaml``: 9 blocks, 521 keys, 27,048,835 parameters) and
``big`` (``big-lama.yaml``: 18 blocks, 989 keys, 50,975,875). Released checkpoints are Lightning checkpoints that
hold the generator under ``generator.`` next to the discriminator and the losses; :func:`generator_state` (the
model's registered checkpoint filter) keeps the generator's keys, and the load stays strict.

Generator (``model`` is one ``nn.Sequential`` in the official code; the indices are the checkpoint's):

- 0–1: reflect pad 3, 7×7 conv 4→64; 2–3: 3×3 stride-2 convs 64→128→256; 4: a 3×3 stride-2 FFC 256→(128 local,
  384 global); every conv bias-free with reflect padding, each followed by BatchNorm + ReLU (:class:`FFCLayer`);
- 5…: ``FFCResnetBlock`` ×9 (×18): two FFC layers (:mod:`.layers.ffc`; spectral transform and Fourier unit with
  BatchNorm) and a residual on each stream, at H/8 × W/8;
- then the streams are concatenated (a parameter-free module, index 14 / 23) and three ``ConvTranspose2d(3, s2,
  p1, op1)`` + BatchNorm + ReLU stages 512→256→128→64, reflect pad 3, 7×7 conv 64→3 with bias, sigmoid.

Native convention (the official training module): input ``cat[img·(1−m), m]`` with img in [0,1] and mask 1 = hole,
output in [0,1], composited by the caller. The official prediction pads the image to a multiple of 8; rbench's
inputs are fixed per export, so the model takes multiples of 8 and pads nothing.

Forms: ``fft="torch"`` (default) keeps ``torch.fft`` (Core ML lowers it to matmuls itself); ``fft="matmul"`` computes
the same transform as constant matmuls at the size each Fourier unit sees (:mod:`.layers.dft`), the form exported
to ONNX, TensorRT and QNN, which have no FFT op. Deploy folds every BatchNorm (the FFC layers' and Fourier units'
are folded by the layers themselves, the rest by the generic pass).

Measured (seeded weights, ``rbench export --target onnx``, opset 18, ORT CPU against the PyTorch fp32 deploy form):
fp32 parity 6.6e-7 (fourier, 512²) and 6.0e-7 (big, 1024²); fp16 (ORT's converter, no op kept in fp32) 3.5e-4
(fourier) and 2.7e-4 (big) at 512², PSNR ≈ 90 dB; Core ML fp16 emulated (``exporters.coreml.fp16_error_bound``)
7.5e-4 / 6.8e-4 with activations up to 383. Seeded weights keep the residual stack near unit RMS, so these say
nothing about the growth a third party reports for trained weights in fp16 (``g-ronimo/lama``); an fp16 export of
released weights records its own parity. fvcore GMACs of the deploy form with ``torch.fft`` (FFTs uncounted):
127.3 / 509.0 (fourier, 512² / 1024²; 127.6 before BatchNorm folding, as models.md) and 219.9 / 878.9 (big); the
matmul form adds the DFTs: 129.2 / 523.8 and 223.7 / 908.7.

Not reproduced: the training-time parts (discriminator, perceptual losses), LaMa's optional test-time feature
refinement, and the multi-dilated generator AI Hub ships as LaMa-Dilated (it shares no layer with this one).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .layers import FFCLayer, FFCResnetBlock
from .pipeline import InpaintingPipeline
from .registry import ResolutionConstraint, register_model

BASE = 64  # ngf
DOWNSAMPLINGS = 3
BOTTLENECK = BASE * 2**DOWNSAMPLINGS  # 512 channels at H/8 × W/8
GLOBAL_RATIO = 0.75  # the blocks' FFC split: 128 local + 384 global channels
RESIDUAL_GAIN = 0.5  # seeded init: a block's second layer is scaled by RESIDUAL_GAIN / blocks (see init_weights)
OUTPUT_GAIN = 0.5  # seeded init: scale of the output conv (the sigmoid sees a spread, neither flat nor saturated)
GENERATOR_PREFIX = "generator."  # where the Lightning training module holds the generator
NO_FFT_TARGETS = ("onnx", "tensorrt", "qnn")


class ConcatStreams(nn.Module):
    """The official ``ConcatTupleLayer``: (local, global) → one tensor, local channels first."""

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
        return torch.cat([x_l, x_g], dim=1)


class LamaGenerator(nn.Module):
    """The official ``FFCResNetGenerator`` (ngf 64, 3 downsamplings, ``blocks`` FFC blocks, sigmoid output).

    ``forward(x)``: x = (B,4,H,W) ``cat[img·(1−m), m]``, H and W multiples of 8 → (B,3,H,W) in [0,1].
    """

    def __init__(self, blocks: int = 9, fft: str = "torch") -> None:
        super().__init__()
        self.blocks = blocks
        encoder: list[nn.Module] = [nn.ReflectionPad2d(3), FFCLayer(4, BASE, 7, fft=fft)]
        for i in range(DOWNSAMPLINGS):
            ratio_gout = GLOBAL_RATIO if i == DOWNSAMPLINGS - 1 else 0.0
            encoder.append(FFCLayer(BASE * 2**i, BASE * 2**(i + 1), 3, 0.0, ratio_gout, stride=2, padding=1, fft=fft))
        decoder: list[nn.Module] = []
        for i in range(DOWNSAMPLINGS):
            channels = BOTTLENECK // 2**i
            decoder += [nn.ConvTranspose2d(channels, channels // 2, 3, stride=2, padding=1, output_padding=1),
                        nn.BatchNorm2d(channels // 2), nn.ReLU()]
        decoder += [nn.ReflectionPad2d(3), nn.Conv2d(BASE, 3, 7), nn.Sigmoid()]
        self.model = nn.Sequential(*encoder, *(FFCResnetBlock(BOTTLENECK, fft, GLOBAL_RATIO) for _ in range(blocks)),
                                   ConcatStreams(), *decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = 2 + DOWNSAMPLINGS  # pad, the 7×7 layer and the downsampling layers
        x_l, x_g = self.model[0](x), None
        for layer in self.model[1:stem + self.blocks]:
            x_l, x_g = layer(x_l, x_g)
        x = self.model[stem + self.blocks](x_l, x_g)
        for layer in self.model[stem + self.blocks + 1:]:
            x = layer(x)
        return x


class Lama(InpaintingPipeline):
    """The LaMa pipeline: ``forward(image, mask)`` with image in [0,1] and mask 1 = hole (rbench contract)."""

    constraint = ResolutionConstraint(
        multiple_of=2**DOWNSAMPLINGS, minimum=64,
        why="LaMa downsamples three times by 2 (the official prediction pads to a multiple of 8)",
    )

    def __init__(self, blocks: int = 9, fft: str = "torch") -> None:
        super().__init__()
        self.net = LamaGenerator(blocks, fft)

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image * (1.0 - mask), mask], dim=1))


def generator_state(state: dict[str, Any]) -> dict[str, Any]:
    """The generator's state_dict out of a LaMa training checkpoint (``generator.*`` next to ``discriminator.*``,
    ``loss_resnet_pl.*``, ``val_evaluator.*``...); a plain generator state_dict passes unchanged."""
    if not any(key.startswith(GENERATOR_PREFIX) for key in state):
        return state
    return {key[len(GENERATOR_PREFIX):]: value for key, value in state.items() if key.startswith(GENERATOR_PREFIX)}


def init_weights(net: LamaGenerator) -> LamaGenerator:
    """Seeded random weights with trained-like activation scales (the global RNG; ``create_model`` seeds it).

    Convs Kaiming-normal (ReLU gain, fan-in), BatchNorms at identity. Each block adds a ReLU output (never
    negative), so with plain Kaiming the bottleneck grows ×1.5 per block (×1000 over 18); the last linear layer on
    each path of a block's second FFC layer is scaled by ``RESIDUAL_GAIN / blocks``, which keeps the growth over
    the whole stack near ×1.5 for either depth (measured at 256²). The output conv is scaled by :data:`OUTPUT_GAIN`.
    """
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
        elif isinstance(module, nn.ConvTranspose2d):  # (in, out, k, k): an output pixel sees in·k²/stride² taps
            fan_in = module.weight.shape[0] * module.weight[0, 0].numel() / math.prod(module.stride)
        else:
            continue
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_in))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    with torch.no_grad():
        for block in net.model:
            if isinstance(block, FFCResnetBlock):
                for conv in sum(block.conv2.ffc.stream_convs(), []):
                    conv.weight.mul_(RESIDUAL_GAIN / net.blocks)
        net.model[-2].weight.mul_(OUTPUT_GAIN)
    return net


@register_model(
    "lama",
    summary="LaMa (WACV 2022): FFC ResNet generator, 9 (fourier) or 18 (big) Fourier blocks at 1/8 resolution",
    constraint=Lama.constraint,
    variants={"fourier": {"blocks": 9}, "big": {"blocks": 18}},
    forms=lambda variant, target: {"fft": "matmul"} if target in NO_FFT_TARGETS else {},
    in_default_sweep=False,
    checkpoint_filter=generator_state,
)
def lama(blocks: int = 9, fft: str = "torch") -> Lama:
    """Seeded random LaMa (see :func:`init_weights`); ``fft="matmul"`` is the form exported where no FFT op runs."""
    model = Lama(blocks, fft)
    init_weights(model.net)
    return model
