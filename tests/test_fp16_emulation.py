"""Core ML fp16 emulation (``exporters.coreml.fp16_error_bound``) against an fp16 program computed here, op by op.

No coremltools needed: the emulation is plain PyTorch (``exporters.coreml`` imports coremltools lazily).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from exporters.coreml import fp16_error_bound


def fp16(tensor: torch.Tensor) -> torch.Tensor:
    """Round to the nearest fp16 value, kept in fp32."""
    return tensor.half().float()


class Chain(nn.Module):
    """A weight and five elementwise ops: each op's fp16 rounding adds its own error, which the ops after it carry."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.2345678))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = image * self.gain
        x = x * x
        x = x + image
        x = x / 3.0
        return x * mask


def chain_in_fp16(image: torch.Tensor, mask: torch.Tensor, gain: torch.Tensor, per_op: bool) -> torch.Tensor:
    """``Chain`` with fp16 weights and inputs; with ``per_op``, every op's result rounded to fp16 as well."""
    round_op = fp16 if per_op else (lambda t: t)
    image, mask, gain = fp16(image), fp16(mask), fp16(gain)
    x = round_op(image * gain)
    x = round_op(x * x)
    x = round_op(x + image)
    x = round_op(x / 3.0)
    return round_op(x * mask)


def test_fp16_emulation_rounds_every_op_result():
    """The bound must be the error of an fp16 program that rounds each op's result, not only the weights and inputs
    (tests/test_coreml.py compares with rel=0.5, which a switched-off per-op rounding also passes)."""
    gen = torch.Generator().manual_seed(0)
    image, mask = torch.rand(1, 3, 32, 32, generator=gen), torch.ones(1, 1, 32, 32)
    model = Chain().eval()
    bound = fp16_error_bound(model, (image, mask))
    with torch.no_grad():
        reference = model(image, mask)
        per_op, inputs_only = (chain_in_fp16(image, mask, model.gain, per_op=flag) for flag in (True, False))
    expected = (per_op - reference).abs()
    without_per_op = float((inputs_only - reference).abs().max())
    assert float(expected.max()) > 1.5 * without_per_op  # the two emulations are told apart
    assert bound["max_abs_error"] == pytest.approx(float(expected.max()), rel=1e-6)
    assert bound["mean_abs_error"] == pytest.approx(float(expected.double().mean()), rel=1e-6)
