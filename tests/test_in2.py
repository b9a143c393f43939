"""IN² (``rethined_bench.models.in2``): neighbourhood attention against a per-pixel reference with NATTEN's border
rule, the INR decoder against LIIF's local ensemble written per query, arbitrary aspect ratios, the parameter
budget of the paper's Table 9, and non-square export. The pipeline contract (known pixels, hole content, refused
sizes, deploy, ONNX parity at the smallest square size, strict state_dict) is in ``tests/test_model_contract.py``.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import rethined_bench as rb
from rethined_bench.inputs import make_inputs
from rethined_bench.models import sweep_models
from rethined_bench.models.in2 import INRBlock, NeighbourhoodAttention, window_starts

PAPER_PARAMS = 15.5e6  # Table 9 (appendix)


@pytest.fixture(scope="module")
def model():
    return rb.create_model("in2")


def natten_reference(attn: NeighbourhoodAttention, x: torch.Tensor) -> torch.Tensor:
    """Pixel by pixel and head by head: the k×k window NATTEN gives a pixel (centred, its start clamped so that the
    window lies inside the map), scaled dot products, softmax, the weighted sum of the window's values."""
    batch, height, width, channels = x.shape
    k, heads = attn.kernel, attn.heads
    d = channels // heads
    q, key, value = attn.qkv(x).split(channels, dim=-1)
    out = torch.zeros(batch, height, width, channels)
    for i in range(height):
        top = min(max(i - k // 2, 0), height - k)
        for j in range(width):
            left = min(max(j - k // 2, 0), width - k)
            for head in range(heads):
                ch = slice(head * d, (head + 1) * d)
                keys = key[:, top:top + k, left:left + k, ch].reshape(batch, k * k, d)
                values = value[:, top:top + k, left:left + k, ch].reshape(batch, k * k, d)
                logits = torch.einsum("bd,bnd->bn", q[:, i, j, ch], keys) / math.sqrt(d)
                out[:, i, j, ch] = torch.einsum("bn,bnd->bd", logits.softmax(-1), values)
    return attn.proj(out)


def test_natten_window_is_clamped_inside_the_map():
    """NATTEN shifts the window inward at the borders (no zero padding): every window has k valid pixels."""
    assert window_starts(9, 5).tolist() == [0, 0, 0, 1, 2, 3, 4, 4, 4]
    assert window_starts(5, 5).tolist() == [0] * 5


@pytest.mark.parametrize("height,width", [(6, 9), (5, 5)])
def test_neighbourhood_attention_equals_a_per_pixel_reference(height, width):
    generator = torch.Generator().manual_seed(0)
    attn = NeighbourhoodAttention(8, heads=2, kernel=5)
    with torch.no_grad():
        for parameter in attn.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    x = torch.randn(2, height, width, 8, generator=generator)
    with torch.no_grad():
        assert torch.allclose(attn(x), natten_reference(attn, x), atol=1e-5)


def liif_reference(block: INRBlock, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Query by query, as LIIF: the four neighbours on the unclamped grid around the query, each weighted by the
    area of the opposite rectangle, read at the edge-clamped index with the offset to the feature actually read;
    ``f = GELU(W_a·a + W_δ·δ + b)``; then the MLP over ``[â, cell]`` with ``cell = (h/H, w/W)``."""
    batch, channels, h, w = features.shape
    height, width = size
    hidden = block.embed.out_channels
    w_a, b = block.embed.weight.reshape(hidden, channels), block.embed.bias
    cell = torch.tensor([h / height, w / width])
    out = torch.zeros(batch, block.fc2.out_channels, height, width)
    for i in range(height):
        y = (i + 0.5) * h / height - 0.5
        for j in range(width):
            x = (j + 0.5) * w / width - 0.5
            ensemble = torch.zeros(batch, hidden)
            for ny in (math.floor(y), math.floor(y) + 1):
                for nx in (math.floor(x), math.floor(x) + 1):
                    ry, rx = min(max(ny, 0), h - 1), min(max(nx, 0), w - 1)
                    area = (1 - abs(y - ny)) * (1 - abs(x - nx))
                    offset = torch.tensor([y - ry, x - rx])
                    ensemble += area * F.gelu(features[:, :, ry, rx] @ w_a.T + b + block.position(offset))
            mlp_in = torch.cat([ensemble, cell.expand(batch, 2)], dim=1)
            hidden_out = F.gelu(F.linear(mlp_in, block.fc1.weight[:, :, 0, 0], block.fc1.bias))
            out[:, :, i, j] = F.linear(hidden_out, block.fc2.weight[:, :, 0, 0], block.fc2.bias)
    return out


@pytest.mark.parametrize("size", [(6, 10), (7, 9), (2, 3)])  # the pyramid's 2x, a non-integer scale, shrinking
def test_inr_block_equals_liif_local_ensemble_per_query(size):
    generator = torch.Generator().manual_seed(1)
    block = INRBlock(6, 4, 8)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    features = torch.randn(2, 6, 3, 5, generator=generator)
    with torch.no_grad():
        out = block(features, size)
        assert out.shape == (2, 4, *size)
        assert torch.allclose(out, liif_reference(block, features, size), atol=1e-4)


def test_a_non_square_output_equals_the_torch_fft_reference_and_its_trace(model):
    """H != W end to end; the matmul DFT equals ``torch.fft``; and under ``torch.jit.trace`` (fvcore's counter, the
    opset-13 exporter for TensorRT 8.2), where sizes are traced values, the trace-time constants (gather indices,
    ensemble weights, the cell) still come out right."""
    image, mask = make_inputs(64, 96, seed=2)
    reference = rb.create_model("in2", fft="torch")
    with torch.inference_mode():
        out = model(image, mask)
        raw = model.net(image, mask)
        assert out.shape == image.shape
        assert float((out - reference(image, mask)).abs().max()) < 1e-4
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's note that sizes become constants: intended
            traced = torch.jit.trace(model, (image, mask), check_trace=False)
        assert float((traced(image, mask) - out).abs().max()) < 1e-5
    assert 0.05 < float(raw.std()) and float(raw.min()) > 0.0 and float(raw.max()) < 1.0  # not saturated


def test_parameter_count_is_within_5_percent_of_the_paper(model):
    params = sum(p.numel() for p in model.parameters())
    assert params == 15_433_471  # the module docstring's number
    assert abs(params - PAPER_PARAMS) / PAPER_PARAMS < 0.05


def test_registration():
    spec = rb.get_model_spec("in2")
    assert not spec.in_default_sweep and spec.paper_key is None
    assert "in2" not in sweep_models(None) and "in2" in sweep_models(["all"])
    assert not spec.constraint.square


@pytest.mark.slow  # a dynamo export (about a minute on two shared cores)
def test_non_square_onnx_export_has_recorded_parity(tmp_path):
    from conftest import export_here
    from exporters import ExportRequest

    artifact = export_here(ExportRequest("in2", 64, 96, "onnx"), tmp_path, count_work=False)
    manifest = artifact.manifest
    assert manifest["resolution"] == [64, 96] and artifact.path.name.endswith("_64x96.onnx")
    assert manifest["parity"]["status"] == "ok" and manifest["parity"]["max_abs_error"] < 1e-4
    assert manifest["inputs"][0]["shape"] == [1, 3, 64, 96]


@pytest.mark.slow
def test_coreml_fp16_export_non_square(tmp_path):
    """Conversion on Linux through the export driver, with its structural and fp16 checks (prediction needs macOS)."""
    pytest.importorskip("coremltools", reason="the coreml extra is not installed")
    from conftest import export_here
    from exporters import ExportRequest

    artifact = export_here(ExportRequest("in2", 64, 96, "coreml", precision="fp16"), tmp_path)
    ops = set(artifact.manifest["coreml"]["ops"])
    assert {"conv", "matmul", "gather", "softmax", "layer_norm"} <= ops
    assert not {op for op in ops if "fft" in op}  # the DFT stays matmuls
    assert artifact.manifest["fp16_error_bound"]["max_abs_error"] < 2e-2
