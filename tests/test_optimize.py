"""Deploy transforms: re-parameterisation and BatchNorm folding are exact; deploy() refuses a wrong fold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rethined_bench.errors import DeployMismatchError
from rethined_bench.models.blocks import RepConvBlock, randomize_batchnorm
from rethined_bench.optimize import deploy, fuse_batchnorm, reparameterize_model


@pytest.mark.parametrize("in_ch,out_ch,kernel,stride,groups,branches", [
    (8, 8, 3, 1, 8, 1),    # depthwise with identity and scale branches
    (8, 8, 3, 2, 8, 3),    # depthwise, stride 2 (no identity), k = 3 branches
    (8, 16, 1, 1, 1, 1),   # pointwise (no scale branch)
    (16, 16, 1, 1, 1, 2),  # pointwise with identity
    (4, 8, 3, 2, 1, 1),    # dense stem
])
def test_rep_block_reparameterizes_exactly(in_ch, out_ch, kernel, stride, groups, branches):
    torch.manual_seed(0)
    block = RepConvBlock(in_ch, out_ch, kernel, stride, groups, branches)
    randomize_batchnorm(block)
    block.eval()
    x = torch.randn(2, in_ch, 17, 19)
    with torch.no_grad():
        expected = block(x)
        reparameterize_model(block)
        actual = block(x)
    assert block.is_reparameterized and block.reparam_conv is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert (expected - actual).abs().max() < 1e-5


def test_fuse_batchnorm_folds_conv_and_linear_pairs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 25, 10), nn.BatchNorm1d(10))
    randomize_batchnorm(model)
    model.eval()
    x = torch.randn(4, 3, 5, 5)
    with torch.no_grad():
        expected = model(x)
        fuse_batchnorm(model)
        actual = model(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert (expected - actual).abs().max() < 1e-5


def test_deploy_raises_when_the_inference_form_differs(monkeypatch, rethined_train):
    original = RepConvBlock.fused_kernel_and_bias

    def wrong(self):
        kernel, bias = original(self)
        return kernel, bias + 0.5

    monkeypatch.setattr(RepConvBlock, "fused_kernel_and_bias", wrong)
    with pytest.raises(DeployMismatchError, match="differs"):
        deploy(rethined_train)


@pytest.mark.parametrize("groups", [1, 2])
def test_generic_folder_folds_batchnorm_into_a_transposed_conv(groups):
    """``optimize.fuse_bn`` on ConvTranspose2d + BatchNorm, grouped too (weight (in, out/groups, k, k))."""
    layers = nn.Sequential(nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=groups), nn.BatchNorm2d(6))
    randomize_batchnorm(layers, torch.Generator().manual_seed(groups))
    layers.eval()
    x = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = layers(x)
    assert fuse_batchnorm(layers)["structural"] == 1 and isinstance(layers[1], nn.Identity)
    with torch.inference_mode():
        torch.testing.assert_close(layers(x), expected, atol=1e-5, rtol=1e-5)


class _ConvThenNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


class _SizeChecked(nn.Module):
    """A top module fx cannot trace (a size check on a Python int), around a block it can."""

    def __init__(self) -> None:
        super().__init__()
        self.block = _ConvThenNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if int(x.shape[-1]) % 2:
            raise ValueError("even widths only")
        return self.block(x)


def test_a_module_that_does_not_trace_has_its_children_traced():
    model = _SizeChecked().eval()
    randomize_batchnorm(model, torch.Generator().manual_seed(4))
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x)
    report = fuse_batchnorm(model)
    assert report["graph"] == 1 and isinstance(model.block.norm, nn.Identity)
    assert report["graph_trace"] == "children traced instead of _SizeChecked (TypeError)"
    with torch.inference_mode():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
