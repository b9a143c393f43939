"""Shared layers (``rethined_bench.models.layers``): the matmul DFT against torch.fft at the sizes LaMa's Fourier units
see, its behaviour under export, and the FFC layers' own BatchNorm folding. CoordFill's and LaMa's test modules
check the layers inside their models."""

from __future__ import annotations

import pytest
import torch

from rethined_bench.models.blocks import randomize_batchnorm
from rethined_bench.models.layers import FFCLayer, FourierUnit, irfft2, rfft2
from rethined_bench.optimize import reparameterize_model


def fourier_pair(channels: int, norm: str = "batch") -> tuple[FourierUnit, FourierUnit]:
    """(matmul, torch) Fourier units with the same random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    matmul = FourierUnit(channels, fft="matmul", norm=norm)
    randomize_batchnorm(matmul, torch.Generator().manual_seed(1))
    reference = FourierUnit(channels, fft="torch", norm=norm)
    reference.load_state_dict(matmul.state_dict())
    return matmul.eval(), reference.eval()


# --- the transform -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(64, 64), (48, 80), (9, 13)])  # LaMa's bottleneck at 512², at 384×640, odd
def test_real_dft_matches_torch_fft(size):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=gen)
    real, imag = rfft2(x)
    spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
    torch.testing.assert_close(real, spectrum.real, rtol=0, atol=2e-5)
    torch.testing.assert_close(imag, spectrum.imag, rtol=0, atol=2e-5)
    # an arbitrary (non-Hermitian) spectrum, as the FourierUnit's conv produces: C2R ignores the DC/Nyquist imag
    re, im = torch.randn(2, *real.shape, generator=gen).unbind(0)
    expected = torch.fft.irfftn(torch.complex(re, im), s=size, dim=(-2, -1), norm="ortho")
    torch.testing.assert_close(irfft2(re, im, size[1]), expected, rtol=0, atol=2e-5)


def test_inverse_refuses_a_spectrum_of_another_width():
    with pytest.raises(ValueError, match="frequency bins"):
        irfft2(torch.zeros(1, 8, 5), torch.zeros(1, 8, 5), 10)


@pytest.mark.parametrize("size", [(64, 64), (64, 40)])
def test_fourier_unit_matmul_equals_torch_fft(size):
    matmul, reference = fourier_pair(32)
    x = torch.relu(torch.randn(2, 32, *size, generator=torch.Generator().manual_seed(2)))
    with torch.inference_mode():
        torch.testing.assert_close(matmul(x), reference(x), rtol=0, atol=1e-5)


def test_a_size_first_seen_by_an_export_still_runs_eagerly():
    """The tables are cached per size; a first use under ``torch.export`` (fake tensors) must not leave fake tensors
    in the cache for the eager calls after it."""
    matmul, reference = fourier_pair(8)
    x = torch.rand(1, 8, 24, 56)  # a size no other test uses
    program = torch.export.export(matmul, (x,))
    with torch.inference_mode():
        torch.testing.assert_close(matmul(x), reference(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(program.module()(x), reference(x), rtol=0, atol=1e-5)


@pytest.mark.slow  # the contract test exports LaMa's matmul form at its smallest size by default
def test_matmul_form_exports_to_onnx_without_an_fft_op(tmp_path):
    import onnx
    import onnxruntime as ort

    matmul, reference = fourier_pair(16)
    x = torch.rand(1, 16, 64, 64)
    path = tmp_path / "fu.onnx"
    torch.onnx.export(matmul, (x,), str(path), dynamo=True, opset_version=18, input_names=["x"], verbose=False)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "MatMul" in ops and not ops & {"DFT", "STFT"}, ops
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.inference_mode():
        torch.testing.assert_close(torch.from_numpy(out), reference(x), rtol=0, atol=1e-5)


# --- FFC layers --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("in_ch,out_ch,ratio_gin,ratio_gout,stride", [
    (32, 32, 0.75, 0.75, 1),  # a LaMa block layer: both streams in and out
    (16, 32, 0.0, 0.75, 2),  # LaMa's last downsampling: local in, both out
    (32, 4, 0.75, 0.0, 1),  # both in, local out (CoordFill's attention mask)
])
def test_ffc_layer_folds_its_batchnorms_exactly(in_ch, out_ch, ratio_gin, ratio_gout, stride):
    torch.manual_seed(0)
    layer = FFCLayer(in_ch, out_ch, 3, ratio_gin, ratio_gout, stride=stride, padding=1, fft="torch")
    randomize_batchnorm(layer, torch.Generator().manual_seed(1))
    layer.eval()
    x_g = torch.randn(2, int(in_ch * ratio_gin), 16, 16) if ratio_gin else None
    x_l = torch.randn(2, in_ch - int(in_ch * ratio_gin), 16, 16)
    with torch.inference_mode():
        expected = layer(x_l, x_g)
    reparameterize_model(layer)  # the layer's own stream norms and its Fourier unit's
    left = [name for name, m in layer.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert left == ([] if layer.ffc.convg2g is None else ["ffc.convg2g.conv1.1"])  # a Conv→BN Sequential
    with torch.inference_mode():
        actual = layer(x_l, x_g)
    for a, e in zip(actual, expected):
        assert (a is None) == (e is None)
        if e is not None:
            torch.testing.assert_close(a, e, rtol=0, atol=1e-5)


def test_unused_norm_keeps_the_checkpoint_entries_but_never_normalises():
    torch.manual_seed(0)
    layer = FFCLayer(32, 32, 3, 0.75, 0.75, padding=1, norm="unused").eval()
    assert {"bn_l.running_var", "bn_g.weight", "ffc.convg2g.fu.bn.bias"} <= set(layer.state_dict())
    x_l, x_g = torch.randn(1, 8, 8, 8), torch.randn(1, 24, 8, 8)
    with torch.inference_mode():
        expected = layer(x_l, x_g)
        for name, value in layer.state_dict().items():
            if ".bn" in f".{name}" and value.is_floating_point():
                value.uniform_(2.0, 3.0)
        assert all(torch.equal(a, e) for a, e in zip(layer(x_l, x_g), expected))


@pytest.mark.parametrize("option", [{"fft": "fftw"}, {"norm": "layer"}, {"activation": "gelu"}])
def test_unknown_options_are_refused(option):
    with pytest.raises(ValueError, match=next(iter(option))):
        FFCLayer(8, 8, 3, 0.5, 0.5, padding=1, **option)
