"""CoordFill: official checkpoint layout, the upstream position encoding, the matmul-DFT and MLP forms against their
references, the pipeline contract, ONNX and Core ML export.

``tests/data/coordfill.json`` is a copy of ``shared/reference/state_dicts/coordfill.json`` (the parameter manifest of
``NiFangBaAGe/CoordFill@989a393f:models/coordfill.py:CoordFill`` in the released configuration), so these tests run
from a fresh clone without ``../shared``. Exports at 1024 run by default; 2048 and 4096 with ``-m slow``.
"""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import rethined_bench.models.coordfill as coordfill  # registers "coordfill"
from rethined_bench.errors import RbenchError, UnsupportedResolutionError
from rethined_bench.inputs import make_inputs
from rethined_bench.models import create_model, get_model_spec
from rethined_bench.models.layers import FourierUnit, RealDFT2d
from rethined_bench.optimize import deploy, deploy_leftovers

from conftest import mlprogram_of

DATA = Path(__file__).parent / "data"
OFFICIAL_PARAMS = 31_637_010
# ops that would make the graph data-dependent or need an FFT kernel (ORT-CUDA, TensorRT and QNN have none)
FORBIDDEN_OPS = {"DFT", "STFT", "NonZero", "GatherND", "ScatterND", "ScatterElements", "Loop", "If", "Scan"}


def manifest() -> dict:
    return json.loads((DATA / "coordfill.json").read_text())


@pytest.fixture(scope="module")
def model():
    return create_model("coordfill")


@pytest.fixture(scope="module")
def sample_256(model):
    """(image, mask, output) at the smallest size: most checks need one forward, and the encoder costs the same
    at every size."""
    image, mask = make_inputs(256, 256, seed=1)
    with torch.inference_mode():
        return image, mask, model(image, mask)


# --- checkpoint layout -------------------------------------------------------------------------------------------

def test_parameter_count_is_official(model):
    assert sum(p.numel() for p in model.net.parameters()) == OFFICIAL_PARAMS == manifest()["param_count"]


def test_state_dict_matches_official_manifest(model):
    ours = [[key, list(value.shape), str(value.dtype).removeprefix("torch.")]
            for key, value in model.net.state_dict().items()]
    official = manifest()
    assert len(ours) == official["num_keys"] == 272
    assert ours == official["state_dict"]  # keys, shapes, dtypes and order, the 205 unused BatchNorm keys included


def test_registration():
    spec = get_model_spec("coordfill")
    constraint = spec.constraint
    assert (constraint.multiple_of, constraint.minimum, constraint.square) == (32, 256, True)
    assert spec.paper_claims["table3"]["params"] == 39.6  # the RETHINED paper's figure; the released code has 31.6M


@pytest.mark.parametrize("key", ["refine.block3.add.bn_g.running_var", "asap.lowres_stream.out_para.0.bias"])
def test_checkpoint_with_a_missing_key_is_rejected(model, tmp_path, key):
    # the official CoordFill.load_state_dict silently skips missing keys; rbench must not
    state = model.net.state_dict()
    del state[key]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(RbenchError, match="do not match"):
        create_model("coordfill", weights=path)


def test_deploy_form_is_the_model_itself(model):
    deployed = deploy(model)
    assert deployed.deploy_check["max_abs_error"] < 1e-6
    assert deploy_leftovers(deployed) == []  # the unused BatchNorms are state-only, not BatchNorm modules


# --- pixel MLP: parameter layout, position encoding, tiling ------------------------------------------------------

def test_mlp_layout_matches_the_official_slices():
    # models.md §4.3: per layer [bias, W (n_in × n_out, row-major)]
    assert coordfill.mlp_layout() == [(0, 64, 4, 64), (320, 384, 64, 64), (4480, 4544, 64, 64),
                                      (8640, 8704, 64, 64), (12800, 12803, 64, 3)]
    assert coordfill.mlp_param_count() == 12995 == manifest()["state_dict"][1][1][0]


def upstream_pe_formula(k: int) -> np.ndarray:
    """models.md §4.3: u = col mod k, v = row mod k; cos/sin(2π·(7/8)·u/(k−1)), cos/sin(2π·(49/64)·k·v/(k−1)²)."""
    v, u = np.divmod(np.arange(k * k), k)
    x = 2 * np.pi * (7 / 8) * u / (k - 1)
    y = 2 * np.pi * (49 / 64) * k * v / (k - 1) ** 2
    return np.stack([np.cos(x), np.sin(x), np.cos(y), np.sin(y)], axis=1)


def upstream_pe_procedure(k: int) -> np.ndarray:
    """The steps models.md describes for ``_get_coords``: phases (i mod k)/k, x normalised so its peak is 7/8,
    and the y phase normalised starting from the *already normalised x* vector (the upstream bug)."""
    raw = (np.arange(k * 4) % k) / k  # a 4k-wide square image: every tile sees the same in-tile phases
    x = raw / (raw.max() / (7 / 8))
    y = x / (raw.max() / (7 / 8))  # the bug: x where y was meant
    tile_x, tile_y = x[:k], y[:k]
    v, u = np.divmod(np.arange(k * k), k)
    return np.stack([np.cos(2 * np.pi * tile_x[u]), np.sin(2 * np.pi * tile_x[u]),
                     np.cos(2 * np.pi * tile_y[v]), np.sin(2 * np.pi * tile_y[v])], axis=1)


@pytest.mark.parametrize("k", [8, 16, 64])
def test_position_encoding_reproduces_the_upstream_bug(k):
    ours = coordfill.position_encoding(k).numpy()
    assert ours.shape == (k * k, 4) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, upstream_pe_formula(k), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours, upstream_pe_procedure(k), rtol=0, atol=1e-6)
    # the y phase peaks at (7/8)²·k/(k−1) turns: 0.875 only for k = 8 (models.md: 0.8167 at 16, 0.7778 at 64)
    peak = {8: 0.875, 16: 0.8167, 64: 0.7778}[k]
    assert math.isclose(math.atan2(ours[-1, 3], ours[-1, 2]) / (2 * math.pi) % 1.0, peak, abs_tol=1e-4)


def per_pixel_reference(params: torch.Tensor, k: int) -> torch.Tensor:
    """models.md §4.3: nearest-upsample each cell's parameters by k and run a dynamic MLP ``h @ W + b`` per pixel
    on the PE of the pixel's in-tile position; (B, cells, 12995) → (B, 3, grid·k, grid·k), float64."""
    batch, cells, _ = params.shape
    grid = math.isqrt(cells)
    pe = torch.from_numpy(upstream_pe_formula(k)).reshape(k, k, 4)
    per_pixel = params.double().reshape(batch, grid, grid, -1).repeat_interleave(k, 1).repeat_interleave(k, 2)
    h = pe.repeat(grid, grid, 1).expand(batch, -1, -1, -1)  # (B, grid·k, grid·k, 4)
    layout = coordfill.mlp_layout()
    for i, (bias_start, weight_start, n_in, n_out) in enumerate(layout):
        weight = per_pixel[..., weight_start:weight_start + n_in * n_out].unflatten(-1, (n_in, n_out))
        h = torch.einsum("byxi,byxio->byxo", h, weight) + per_pixel[..., bias_start:bias_start + n_out]
        h = torch.nn.functional.leaky_relu(h, 0.01) if i < len(layout) - 1 else torch.tanh(h)
    return h.permute(0, 3, 1, 2)


@pytest.mark.parametrize("k", [8, 16])
def test_pixel_mlp_equals_a_per_pixel_dynamic_mlp(k):
    params = 0.15 * torch.randn(2, 9, 12995, generator=torch.Generator().manual_seed(k))  # batch 2, a 3×3 grid
    expected = per_pixel_reference(params, k)
    actual = coordfill.PixelMLP()(params, k)
    assert actual.shape == (2, 3, 3 * k, 3 * k)
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=1e-5)


def test_chunked_mlp_equals_one_chunk(monkeypatch):
    assert coordfill.chunk_cells(1024, 64) == 1024  # 2048²: one 1.1 GB chunk
    assert coordfill.chunk_cells(1024, 128) == 256  # 4096²: four
    params = 0.15 * torch.randn(1, 16, 12995, generator=torch.Generator().manual_seed(0))
    whole = coordfill.PixelMLP()(params, 8)
    monkeypatch.setattr(coordfill, "CHUNK_BYTES", 3 * 8 * 8 * 65 * 4)  # room for three cells: chunks of two
    assert coordfill.chunk_cells(16, 8) == 2
    assert torch.equal(coordfill.PixelMLP()(params, 8), whole)


# --- matmul-DFT against torch.fft --------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(32, 32), (64, 48), (20, 15)])
def test_real_dft_matches_torch_fft(size):
    gen = torch.Generator().manual_seed(0)
    dft = RealDFT2d(*size)
    x = torch.randn(2, 3, *size, generator=gen)
    real, imag = dft.rfft2(x)
    spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
    torch.testing.assert_close(real, spectrum.real, rtol=0, atol=1e-5)
    torch.testing.assert_close(imag, spectrum.imag, rtol=0, atol=1e-5)
    # an arbitrary (non-Hermitian) spectrum, as the FourierUnit's conv produces: C2R ignores the DC/Nyquist imag
    re, im = torch.randn(2, *real.shape, generator=gen).unbind(0)
    expected = torch.fft.irfftn(torch.complex(re, im), s=size, dim=(-2, -1), norm="ortho")
    torch.testing.assert_close(dft.irfft2(re, im), expected, rtol=0, atol=1e-5)
    assert [name for name, _ in dft.named_buffers()] and not dft.state_dict()  # constants, not checkpoint state


def test_fourier_unit_matmul_equals_torch_fft():
    torch.manual_seed(0)
    fu = FourierUnit(192, fft="matmul", norm=coordfill.NORM)
    reference = FourierUnit(192, fft="torch", norm=coordfill.NORM)
    reference.load_state_dict(fu.state_dict())
    x = torch.relu(torch.randn(2, 192, 32, 32))
    with torch.inference_mode():
        expected = reference(x)
        assert float((fu(x) - expected).abs().max()) < 1e-4 * max(1.0, float(expected.abs().max()))


def test_whole_model_matmul_dft_equals_torch_fft(sample_256):
    # the FourierUnits always run at 32², whatever the output size, so the smallest size covers the DFT
    reference = create_model("coordfill", fft="torch")  # same seed: the same weights
    image, mask, output = sample_256
    with torch.inference_mode():
        assert float((output - reference(image, mask)).abs().max()) < 1e-4


def test_unknown_fft_mode_is_refused():
    with pytest.raises(ValueError, match="fft"):
        create_model("coordfill", fft="fftw")


# --- pipeline contract -------------------------------------------------------------------------------------------

def test_known_pixels_are_preserved_and_holes_are_painted(inputs_1024, reference_1024):
    image, mask = inputs_1024
    out = reference_1024
    assert out.shape == image.shape and torch.isfinite(out).all()
    known = (mask == 0).expand_as(image)
    assert torch.equal(out[known], image[known])
    hole = out[~known]
    assert 0 <= float(hole.min()) and float(hole.max()) <= 1
    assert float(hole.std()) > 0.1  # a spread of colours: realistic seeded weights, not a constant
    assert float(((hole < 0.005) | (hole > 0.995)).float().mean()) < 0.05  # and not saturated


def test_painted_holes_follow_the_known_content(model, sample_256):
    """A network that paints its holes the same whatever the input (zeros, a constant, a fixed pattern) fails."""
    image, mask, output = sample_256
    with torch.inference_mode():
        inverted = model(1 - image, mask)
    hole = mask.bool().expand_as(image)
    assert float((inverted[hole] - output[hole]).abs().mean()) > 0.01


def test_hole_content_never_reaches_the_output(model, sample_256, assert_ignores_hole_content):
    """Catches the encoder fed the raw image instead of the known image. At 256 the resize is the identity; above
    it, the official bilinear resize of the whole image (kept on purpose, models.md §4.1) mixes hole pixels into the
    known low-resolution pixels at the hole's edge, so larger sizes do see some hole content."""
    image, mask, output = sample_256
    assert_ignores_hole_content(model, image, mask, output)


def test_native_network_uses_the_official_conventions(model, sample_256):
    image, mask, output = sample_256
    with torch.inference_mode():
        native = model.net(image * 2 - 1, 1 - mask)  # official forward: [-1,1], mask 1 = known, composited
    torch.testing.assert_close(output, (native + 1) / 2, rtol=0, atol=1e-6)


def test_batch_of_two_equals_two_single_runs(model, sample_256, inputs_1024):
    image, mask, output = sample_256
    other_image = torch.nn.functional.interpolate(inputs_1024[0], size=(256, 256), mode="area")
    other_mask = torch.zeros_like(mask)
    other_mask[..., 64:192, 32:96] = 1.0
    with torch.inference_mode():
        other = model(other_image, other_mask)
        both = model(torch.cat([image, other_image]), torch.cat([mask, other_mask]))
    torch.testing.assert_close(both, torch.cat([output, other]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("height,width", [(1024, 512), (512, 1024), (1000, 1000), (544, 512), (224, 224)])
def test_unsupported_resolutions_are_a_clear_error(model, height, width):
    image, mask = torch.zeros(1, 3, height, width), torch.zeros(1, 1, height, width)
    with pytest.raises(UnsupportedResolutionError, match=f"{height}x{width}"):
        model(image, mask)


# --- export ------------------------------------------------------------------------------------------------------

def export_and_run(model, inputs, tmp_path: Path, opset: int) -> tuple[np.ndarray, collections.Counter]:
    import onnx
    import onnxruntime as ort

    from exporters.onnx import export_onnx

    image, mask = inputs
    size = image.shape[-1]
    with torch.no_grad():  # the TorchScript exporter (opset < 18) otherwise records autograd: 19 GB at 4096
        path = export_onnx(model, tmp_path / f"coordfill_{size}_op{opset}.onnx", size, size, opset=opset,
                           example=(image, mask))
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) == opset
    ops = collections.Counter(node.op_type for node in graph.graph.node)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(["inpainted"], {"image": image.numpy(), "mask": mask.numpy()})[0]
    return out, ops


def check_export(model, inputs, reference, tmp_path: Path, opset: int) -> None:
    from rethined_bench.artifact import compare

    out, ops = export_and_run(model, inputs, tmp_path, opset)
    assert not FORBIDDEN_OPS & set(ops), ops
    assert ops["MatMul"] >= 6 * 8  # the six FourierUnits' DFTs are matmuls
    assert compare(reference.numpy(), out)["max_abs_error"] < 1e-4


# opset 18 at 1024 is slow-only: the model contract checks opset 18 parity at 512 in the default run
@pytest.mark.parametrize("opset", [pytest.param(18, marks=pytest.mark.slow), 13])
def test_onnx_export_1024(model, inputs_1024, reference_1024, tmp_path, opset):
    check_export(model, inputs_1024, reference_1024, tmp_path, opset)


@pytest.mark.slow
@pytest.mark.parametrize("opset", [18, 13])
@pytest.mark.parametrize("size", [2048, 4096])
def test_onnx_export_large(model, tmp_path, size, opset):
    inputs = make_inputs(size, size, seed=size)
    with torch.inference_mode():
        reference = model(*inputs)
    check_export(model, inputs, reference, tmp_path, opset)


@pytest.mark.slow  # tests/test_coreml.py converts every model at 1024 by default, with structural checks
def test_coreml_conversion_1024(model, inputs_1024):
    _, ops = mlprogram_of(model, *inputs_1024)
    ops = set(ops)
    assert {"conv", "matmul", "leaky_relu", "tanh"} <= ops
    assert not {op for op in ops if "fft" in op}  # the DFT stays matmuls
