"""Gated convolutions as HiFill uses them (Yi et al., CVPR 2020, §3.4, "light weight gated convolution", LWGC).

``y = sigmoid(gate(x)) · ELU(feat(x))`` with TensorFlow ``SAME`` padding. Two gate kinds:

- ``"slice"`` (LWGC_sc): the gate is a k×k conv to **one** channel, broadcast over the feature channels;
- ``"pixel"`` (LWGC_pw): the gate is a 1×1 conv to C_out with the feature conv's stride. The official ``ds`` gate
  (``Hifill-tensorflow ops.py: conv2d_ds``) declares a depthwise 3×3 too, but its use is commented out, so the
  checkpoint holds only the pointwise filter, and so does this layer.

Both convs carry a bias. TensorFlow's ``SAME`` pads ``total = max((ceil(n/s) − 1)·s + d·(k − 1) + 1 − n, 0)``
with the smaller half first: symmetric for stride 1, but one more pixel at the bottom/right for the stride-2 convs
(a 3×3 stride-2 conv on 64² reads rows 2i..2i+2, not PyTorch's 2i−1..2i+1). :class:`SameConv2d` keeps that, so a
converted checkpoint computes what it computed in TensorFlow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GATES = ("slice", "pixel")


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) of one spatial axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding: the conv's own padding where it is symmetric (one Conv node),
    an explicit zero ``Pad`` before it where it is not (stride 2)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel, stride, padding=0, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight, self.bias)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """This conv's geometry with another weight and bias (:class:`GatedConv2d` stacks the slice gate on)."""
        k, s, d = self.kernel_size[0], self.stride[0], self.dilation[0]
        top, bottom = same_padding(int(x.shape[-2]), k, s, d)
        left, right = same_padding(int(x.shape[-1]), k, s, d)
        if top == bottom and left == right:
            return F.conv2d(x, weight, bias, self.stride, (top, left), self.dilation)
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, self.stride, 0, self.dilation)


class GatedConv2d(nn.Module):
    """``sigmoid(gate(x)) · ELU(feat(x))``; ``gate`` is ``"slice"`` (k×k → 1 channel) or ``"pixel"`` (1×1 → C_out).

    A slice gate has the feature conv's geometry, so one conv computes both (its weight stacked as a last output
    channel, the same MACs; exporters fold the stacking into a constant). Measured with PyTorch on this CPU at 64²:
    a 64→1 conv takes as long as a 64→64 one (61 vs 63 ms), a 64→65 conv 73 ms, so stacking halves the layer.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1,
                 gate: str = "slice") -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, not {gate!r}")
        self.feat = SameConv2d(in_ch, out_ch, kernel, stride, dilation)
        self.gate = (SameConv2d(in_ch, 1, kernel, stride, dilation) if gate == "slice"
                     else SameConv2d(in_ch, out_ch, 1, stride))
        self.stacked = gate == "slice"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stacked:
            y = self.feat.conv(x, torch.cat([self.feat.weight, self.gate.weight]),
                               torch.cat([self.feat.bias, self.gate.bias]))
            feat, gate = y[:, :-1], y[:, -1:]
        else:
            feat, gate = self.feat(x), self.gate(x)
        return torch.sigmoid(gate) * F.elu(feat)
