"""A user's own inpainting network, as an engineer would bring it to rbench (``--model user_nets:build_net``).

Nothing in it comes from rbench: its Conv+BatchNorm pairs are plain attributes called in ``forward`` (no
``nn.Sequential`` to find them by), and its re-parameterisable block follows RepVGG's convention
(``switch_to_deploy()``), so rbench's deploy transforms must find both by themselves.
"""

from __future__ import annotations

import torch
from torch import nn


class RepBlock(nn.Module):
    """3×3 conv + BN beside 1×1 conv + BN beside identity BN, summed (train form); one 3×3 conv once switched."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv3, self.bn3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        self.bn_id = nn.BatchNorm2d(channels)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return torch.relu(self.fused(x))
        return torch.relu(self.bn3(self.conv3(x)) + self.bn1(self.conv1(x)) + self.bn_id(x))

    def switch_to_deploy(self) -> None:
        if self.fused is not None:
            return
        kernel, bias = _fold(self.conv3.weight, self.bn3)
        k1, b1 = _fold(self.conv1.weight, self.bn1)
        identity = torch.zeros_like(self.conv3.weight)
        identity[range(identity.shape[0]), range(identity.shape[0]), 1, 1] = 1.0
        kid, bid = _fold(identity, self.bn_id)
        self.fused = nn.Conv2d(kernel.shape[0], kernel.shape[0], 3, padding=1)
        with torch.no_grad():
            self.fused.weight.copy_(kernel + nn.functional.pad(k1, [1, 1, 1, 1]) + kid)
            self.fused.bias.copy_(bias + b1 + bid)
        del self.conv3, self.bn3, self.conv1, self.bn1, self.bn_id


def _fold(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class TinyInpainter(nn.Module):
    """Encoder conv+BN, a RepVGG-style block, decoder conv; the known pixels composited back."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(4, width, 3, stride=2, padding=1), nn.BatchNorm2d(width)
        self.block = RepBlock(width)
        self.head = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(torch.cat([image * (1 - mask), mask], dim=1))))
        x = nn.functional.interpolate(self.block(x), scale_factor=2.0, mode="nearest")
        filled = torch.sigmoid(self.head(x))
        return image * (1 - mask) + filled * mask


def build_net(width: int = 8) -> nn.Module:
    """A tiny encoder/decoder inpainter with BatchNorms and a RepVGG block (a user's model)."""
    model = TinyInpainter(width)
    with torch.no_grad():  # BatchNorm statistics a trained network would have, so folding is not a no-op
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model


build_net.rbench_resolution = {"multiple_of": 2, "minimum": 32, "why": "one stride-2 stage"}


def build_undeclared(width: int = 8) -> nn.Module:
    """The same network, declaring no sizes: rbench finds out by trying."""
    return build_net(width)
