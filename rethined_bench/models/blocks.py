"""Re-parameterisable conv block (MobileOne style): train-time branches, inference-time single conv."""

from __future__ import annotations

import torch
from torch import nn

from ..optimize.fuse_bn import fold_bn_into_kernel
from ..optimize.reparameterize import identity_kernel, pad_kernel_to


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    )


class RepConvBlock(nn.Module):
    """``act(Σ_k BN(conv_k×k(x)) + BN(conv_1×1(x)) + BN(x))`` at train time, ``act(conv(x))`` after re-param.

    - ``branches`` k×k conv-BN branches (MobileOne's over-parameterisation factor k);
    - a 1×1 conv-BN *scale* branch when ``kernel > 1``;
    - an identity BN branch (the skip connection) when ``in_ch == out_ch`` and ``stride == 1``.
    Depthwise when ``groups == in_ch``; pointwise when ``kernel == 1``. All branches fold exactly into one conv.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 branches: int = 1, act: bool = True) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel, self.stride, self.groups = in_ch, out_ch, kernel, stride, groups
        self.is_reparameterized = False
        self.conv_branches = nn.ModuleList(conv_bn(in_ch, out_ch, kernel, stride, groups) for _ in range(branches))
        self.scale_branch = conv_bn(in_ch, out_ch, 1, stride, groups) if kernel > 1 else None
        self.identity = nn.BatchNorm2d(in_ch) if in_ch == out_ch and stride == 1 else None
        self.reparam_conv: nn.Conv2d | None = None
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.reparam_conv(x))
        out = sum(branch(x) for branch in self.conv_branches)
        if self.scale_branch is not None:
            out = out + self.scale_branch(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.act(out)

    def fused_kernel_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single (kernel, bias) equal to the sum of all branches in eval mode."""
        kernels, biases = [], []
        for branch in self.conv_branches:
            w, b = fold_bn_into_kernel(branch[0].weight, branch[0].bias, branch[1])
            kernels.append(w)
            biases.append(b)
        if self.scale_branch is not None:
            w, b = fold_bn_into_kernel(self.scale_branch[0].weight, None, self.scale_branch[1])
            kernels.append(pad_kernel_to(w, self.kernel))
            biases.append(b)
        if self.identity is not None:
            like = self.conv_branches[0][0].weight
            w, b = fold_bn_into_kernel(identity_kernel(self.in_ch, self.groups, self.kernel, like), None,
                                       self.identity)
            kernels.append(w)
            biases.append(b)
        return torch.stack(kernels).sum(0), torch.stack(biases).sum(0)

    def reparameterize(self) -> None:
        """Switch to the inference form in place: one conv with bias, no BatchNorm, no branches."""
        weight, bias = self.fused_kernel_and_bias()
        conv = nn.Conv2d(self.in_ch, self.out_ch, self.kernel, self.stride, self.kernel // 2, groups=self.groups,
                         bias=True)
        conv.weight.data.copy_(weight)
        conv.bias.data.copy_(bias)
        self.reparam_conv = conv
        del self.conv_branches, self.scale_branch, self.identity
        self.conv_branches, self.scale_branch, self.identity = nn.ModuleList(), None, None
        self.is_reparameterized = True


class DepthwiseSeparable(nn.Sequential):
    """MobileOne unit: depthwise k×k rep-block (carries the stride) then pointwise 1×1 rep-block."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, branches: int = 1) -> None:
        super().__init__(
            RepConvBlock(in_ch, in_ch, 3, stride, groups=in_ch, branches=branches),
            RepConvBlock(in_ch, out_ch, 1, 1, branches=branches),
        )


def randomize_batchnorm(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics, as a trained net has.

    With PyTorch's defaults (γ=1, β=0, μ=0, σ²=1) folding is almost the identity and an equivalence check could
    not catch a wrong fold; seeded random statistics make the deploy check meaningful without trained weights.
    """
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            n = bn.num_features
            with torch.no_grad():
                bn.weight.copy_(0.5 + torch.rand(n, generator=generator))
                bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
                bn.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
