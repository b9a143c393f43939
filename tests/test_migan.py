"""MI-GAN: official checkpoint layout, equivalence with the official formulation, pipelines, deploy and export.

The parameter manifests in ``tests/data/`` are copies of ``shared/reference/state_dicts/migan_{512,256}.json``
(read from ``Picsart-AI-Research/MI-GAN@ca4df2eb:lib/model_zoo/migan_inference.py``), so these tests run from a
fresh clone without ``../shared``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rethined_bench.models.migan  # noqa: F401  (registers "migan")
from rethined_bench import create_model, get_model_spec
from rethined_bench.errors import RbenchError, UnsupportedResolutionError
from rethined_bench.inputs import make_inputs
from rethined_bench.models.migan import (
    Downsample2d,
    EncoderBlock,
    Generator,
    SeparableConv2d,
    Upsample2d,
    build_migan,
    hole_crop_box,
)
from rethined_bench.optimize import deploy, deploy_leftovers

from conftest import mlprogram_of

DATA = Path(__file__).parent / "data"
EXPECTED_PARAMS = {512: 5_973_366, 256: 5_943_617}


def manifest(resolution: int) -> dict:
    return json.loads((DATA / f"migan_{resolution}.json").read_text())


def official_upsample(x: torch.Tensor, weight: torch.Tensor, filter_const: torch.Tensor) -> torch.Tensor:
    """The official Upsample2d as models.md §3.1 describes it: nearest ×2 times the zero-insertion pattern, pad
    (left 2, right 1, top 2, bottom 1), depthwise 4×4 conv."""
    x = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) * filter_const
    x = F.pad(x, (2, 1, 2, 1))
    return F.conv2d(x, weight, groups=x.shape[1])


def official_lrelu_agc(x: torch.Tensor) -> torch.Tensor:
    """The official activation as written there: ``clamp(leaky_relu(x, 0.2)·√2, ±256)``."""
    return (F.leaky_relu(x, 0.2) * math.sqrt(2)).clamp(-256, 256)


def official_separable_forward(self: SeparableConv2d, x: torch.Tensor) -> torch.Tensor:
    """The official SeparableConv2d order with ungained weights, the official activation and upsampler."""
    x = official_lrelu_agc(self.conv1(x))
    x = self.conv2(self.downsample(x) if self.downsample is not None else x)
    if self.upsample is not None:
        x = official_upsample(x, self.upsample.filter.weight, self.upsample.filter_const)
    if self.use_noise:
        x = x + self.noise_const * self.noise_strength
    return official_lrelu_agc(x)


def official_encoder_block_forward(self: EncoderBlock, x, image):
    if self.fromrgb is not None:
        y = official_lrelu_agc(self.fromrgb(image))
        x = y if x is None else x + y
    skip = self.conv1(x)
    return self.conv2(skip), skip


def native_input(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official demo's pre-processing (``scripts/demo.py``): [-1,1] image, mask 1 = known, mask channel first."""
    known = 1.0 - mask
    return torch.cat([known - 0.5, (image * 2 - 1) * known], dim=1)


@pytest.fixture(scope="module")
def model():
    return create_model("migan")


@pytest.fixture(scope="module")
def native_512(model):
    """(image, mask, raw generator output in [-1,1]) at the generator's own resolution."""
    image, mask = make_inputs(512, 512, seed=2)
    with torch.inference_mode():
        return image, mask, model.net(native_input(image, mask))


# --- checkpoint layout -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution", [512, 256])
def test_parameter_count_is_official(resolution):
    net = Generator(resolution)
    count = sum(p.numel() for p in net.parameters())
    assert count == EXPECTED_PARAMS[resolution] == manifest(resolution)["param_count"]


@pytest.mark.parametrize("resolution", [512, 256])
def test_state_dict_matches_official_manifest(resolution):
    ours = [[key, list(value.shape), str(value.dtype).removeprefix("torch.")]
            for key, value in Generator(resolution).state_dict().items()]
    official = manifest(resolution)
    assert len(ours) == official["num_keys"]
    assert ours == official["state_dict"]  # keys, shapes, dtypes and order


def test_registration():
    spec = get_model_spec("migan")
    assert spec.default_variant == "resize"
    assert list(spec.variants) == ["resize", "crop"]
    assert spec.paper_claims["table3"]["params"] == 5.95
    assert (spec.constraint.multiple_of, spec.constraint.minimum) == (512, 512)


def test_seeded_weights_look_like_a_released_checkpoint(model):
    net = model.net
    fir = torch.outer(torch.tensor([1.0, 3.0, 3.0, 1.0]), torch.tensor([1.0, 3.0, 3.0, 1.0]))
    fixed = set()
    for module in net.modules():
        if isinstance(module, Downsample2d):
            assert torch.equal(module.filter.weight, (fir / 64).expand_as(module.filter.weight))
            fixed.add(id(module.filter))
        elif isinstance(module, Upsample2d):
            assert torch.equal(module.filter.weight, (fir / 16).expand_as(module.filter.weight))
            r = module.filter_const.shape[-1]
            pattern = torch.zeros(r, r)
            pattern[::2, ::2] = 1
            assert torch.equal(module.filter_const[0, 0], pattern)
            fixed.add(id(module.filter))
        elif isinstance(module, SeparableConv2d) and module.use_noise:
            assert 0 < float(module.noise_strength) < 1
            assert 0.8 < float(module.noise_const.std()) < 1.2
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and id(m) not in fixed]
    # every learned conv of the 512 generator: encoder 8 blocks × (dw + pw) × 2 + fromrgb, synthesis 8 × 4 + 8 torgb
    assert len(convs) == 33 + 40
    for conv in convs:
        norms = conv.weight.flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))  # export's per-filter weight normalisation


# --- equivalence with the official formulation ------------------------------------------------------------------

@pytest.mark.parametrize("layer", ["down", "up-noise"])
def test_gain_folded_separable_conv_equals_the_official_order(layer):
    torch.manual_seed(0)
    down = layer == "down"
    conv = SeparableConv2d(8, 16, down=down, up=not down, noise_resolution=None if down else 32)
    with torch.no_grad():
        for parameter in conv.parameters():
            if parameter.dim() != 4 or parameter.shape[-1] == 3 or parameter.shape[-1] == 1:  # not the FIR taps
                parameter.normal_(0, 3.0)  # large enough that leaky_relu's negative side and the ±256 clamp act
    x = torch.randn(2, 8, 16, 16) * 20
    with torch.no_grad():
        ours, official = conv(x), official_separable_forward(conv, x)
    assert float(official.abs().max()) == 256.0 and float(official.min()) < 0  # clamp and slope both exercised
    # float32 rounding of the reordered products only (values reach ±256); a wrong gain, slope or clamp is O(1)
    assert float((ours - official).abs().max()) < 1e-5 * 256


@pytest.mark.parametrize("channels", [3, 64])
def test_nearest_blur_upsample_equals_official_zero_insertion(channels):
    up = Upsample2d(channels, resolution=16)
    x = torch.randn(2, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = official_upsample(x, up.filter.weight, up.filter_const)
    torch.testing.assert_close(up(x), expected, rtol=0, atol=1e-6)


def test_generator_equals_the_official_formulation_end_to_end(monkeypatch):
    torch.manual_seed(0)
    net = build_migan(256).net.eval()
    x = torch.randn(1, 4, 256, 256)
    with torch.inference_mode():
        ours = net(x)
        monkeypatch.setattr(SeparableConv2d, "forward", official_separable_forward)
        monkeypatch.setattr(EncoderBlock, "forward", official_encoder_block_forward)
        monkeypatch.setattr(Upsample2d, "forward",
                            lambda self, t: official_upsample(t, self.filter.weight, self.filter_const))
        official = net(x)
    # float32 rounding only (the formulations sum the same products in another order); a wrong phase, padding,
    # gain or noise scale would differ by O(1)
    assert float((ours - official).abs().max()) < 1e-5 * float(official.abs().max())


def test_generator_output_is_a_sane_magnitude(native_512):
    out = native_512[2] * 0.5 + 0.5  # [0,1] space, before clamping and compositing
    assert torch.isfinite(out).all()
    assert float(out.std()) > 0.1  # not constant
    assert float(((out >= 0) & (out <= 1)).float().mean()) > 0.1  # not saturated everywhere


# --- pipelines ---------------------------------------------------------------------------------------------------

def test_native_resolution_uses_the_official_conventions(model, native_512):
    image, mask, raw = native_512
    expected = image * (1 - mask) + (raw * 0.5 + 0.5).clamp(0, 1) * mask  # official post-processing + composite
    with torch.inference_mode():
        torch.testing.assert_close(model(image, mask), expected, rtol=0, atol=1e-6)


def test_resize_pipeline_keeps_known_pixels_exactly(inputs_1024, reference_1024):
    image, mask = inputs_1024
    assert reference_1024.shape == image.shape
    known = (mask == 0).expand_as(image)
    assert torch.equal(reference_1024[known], image[known])
    assert 0 <= float(reference_1024.min()) and float(reference_1024.max()) <= 1


def test_resize_pipeline_never_sees_hole_content(model, inputs_1024, reference_1024, assert_ignores_hole_content):
    assert_ignores_hole_content(model, *inputs_1024, reference_1024)


def test_resize_pipeline_non_square_with_the_256_generator():
    model = create_model("migan", resolution=256)
    image, mask = make_inputs(512, 768, seed=4)
    with torch.inference_mode():
        out = model(image, mask)
    assert out.shape == image.shape
    assert torch.equal(out * (1 - mask), image * (1 - mask))


@pytest.mark.parametrize("size", [(1000, 1000), (768, 1024), (256, 256)])
def test_resize_rejects_sizes_that_are_not_multiples_of_512(model, size):
    image, mask = make_inputs(*size)
    with pytest.raises(UnsupportedResolutionError, match="multiples of 512|at least 512"):
        model(image, mask)


@pytest.mark.parametrize(
    ("size", "hole", "box"),
    [
        ((2048, 2048), (100, 200, 1900, 2000), (0, 512, 1536, 2048)),  # small hole near a corner: 512 window
        ((2048, 2048), (500, 1500, 800, 1100), (372, 1628, 322, 1578)),  # bbox 1000 + 2·128 margin
        ((600, 800), (0, 600, 300, 400), (0, 600, 0, 800)),  # window larger than the image: clipped
        ((600, 800), None, (0, 600, 0, 800)),  # no hole: the whole image
    ],
)
def test_hole_crop_box(size, hole, box):
    mask = torch.zeros(size)
    if hole is not None:
        top, bottom, left, right = hole
        mask[top:bottom, left:right] = 1
    assert hole_crop_box(mask, 512) == box


def test_crop_pipeline_keeps_known_pixels_and_feathers_like_the_official_blend():
    model = create_model("migan", "crop", resolution=256)
    image, mask = make_inputs(640, 896, seed=5)  # not a multiple of 256: the crop variant takes any size >= 256
    scribbled = image * (1 - mask) + torch.rand_like(image) * mask
    with torch.inference_mode():
        out = model(image, mask)
        out_scribbled = model(scribbled, mask)
    assert out.shape == image.shape
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    # the feather (3×3 dilation + 5×5 blur of the known region) reaches at most 3 px into the hole; deeper hole
    # pixels come from the generator only, which never sees hole content
    deep = F.max_pool2d(1 - mask, 7, stride=1, padding=3) == 0
    assert deep.any()
    assert torch.equal(out.expand_as(image)[deep.expand_as(image)],
                       out_scribbled.expand_as(image)[deep.expand_as(image)])
    assert not torch.equal(out, out_scribbled)  # the ring does blend the input's own pixels, as the official code


def test_crop_pipeline_handles_each_batch_item_separately():
    model = create_model("migan", "crop", resolution=256)
    a, b = make_inputs(384, 384, seed=6), make_inputs(384, 384, seed=7)
    with torch.inference_mode():
        batched = model(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
        torch.testing.assert_close(batched[1:], model(*b), rtol=0, atol=1e-6)


def test_crop_rejects_images_smaller_than_the_generator():
    model = create_model("migan", "crop")
    image, mask = make_inputs(256, 600)
    with pytest.raises(UnsupportedResolutionError, match="at least 512"):
        model(image, mask)


def test_crop_variant_refuses_fixed_shape_export():
    model = create_model("migan", "crop", resolution=256)
    image, mask = make_inputs(256, 256)
    with pytest.raises(RbenchError, match="export variant 'resize'"):
        torch.export.export(model, (image, mask))
    with pytest.raises(RbenchError, match="export variant 'resize'"):
        torch.jit.trace(model, (image, mask))


# --- weights -----------------------------------------------------------------------------------------------------

def _edited_checkpoint(model, tmp_path, edit) -> Path:
    state = dict(model.net.state_dict())
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda s: s.pop("synthesis.b8.conv1.noise_const"), id="missing-buffer"),
        pytest.param(lambda s: s.__setitem__("encoder.b512.from_rgb.weight", s.pop("encoder.b512.fromrgb.weight")),
                     id="renamed-key"),
        pytest.param(lambda s: s.__setitem__("synthesis.b512.torgb.bias", torch.zeros(4)), id="wrong-shape"),
        # the upsampler's nearest + [1,2,1] blur form is exact only for the fixed FIR every checkpoint carries
        pytest.param(lambda s: s.update({k: s[k] * 1.01 for k in ["synthesis.b16.conv1.upsample.filter.weight"]}),
                     id="altered-fixed-fir"),
    ],
)
def test_mismatched_checkpoint_is_rejected(model, tmp_path, edit):
    path = _edited_checkpoint(model, tmp_path, edit)
    with pytest.raises(RbenchError, match="do not match"):
        create_model("migan", weights=path)


def test_256_checkpoint_does_not_load_into_the_512_model(tmp_path):
    path = tmp_path / "migan_256.pt"
    torch.save(Generator(256).state_dict(), path)
    with pytest.raises(RbenchError, match="do not match"):
        create_model("migan", weights=path)


# --- deploy and export -------------------------------------------------------------------------------------------

def test_deploy_is_the_released_form(model):
    deployed = deploy(model)
    assert deployed.deploy_check["max_abs_error"] == 0.0
    assert deploy_leftovers(deployed) == []
    reference = model.net.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in deployed.net.state_dict().items())


def _check_onnx(model, inputs, reference, path: Path, size: int, opset: int) -> dict:
    import onnxruntime as ort

    from rethined_bench.artifact import compare
    from exporters.onnx import export_onnx, graph_statistics

    export_onnx(model, path, size, size, opset=opset, example=inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image, mask = inputs
    output = session.run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]
    assert compare(reference.numpy(), output)["max_abs_error"] < 1e-4
    stats = graph_statistics(path)
    assert stats["opset"] == opset
    return stats["ops"]


# opset 18 at 1024 is slow-only: the model contract checks opset 18 parity at 512 in the default run
@pytest.mark.parametrize("opset", [pytest.param(18, marks=pytest.mark.slow), 13])
def test_onnx_export_1024_matches_pytorch(model, inputs_1024, reference_1024, tmp_path, opset):
    ops = _check_onnx(model, inputs_1024, reference_1024, tmp_path / f"migan_{opset}.onnx", 1024, opset)
    # the export-friendly form: 14 upsamplers as nearest Resize + 3×3 blur Conv, no Pad/Where/Mul by a pattern,
    # and one more Resize (bilinear 512 → 1024)
    assert ops.get("Resize") == 14 + 1 and "ConvTranspose" not in ops
    assert ops.get("Conv") == 73 + 7 + 14  # learned convs + FIR downsamplers + upsampler blurs
    assert ops.get("AveragePool") == 1 and ops.get("MaxPool") == 1
    assert not {"Pad", "Where", "NonZero", "If", "Loop"} & set(ops)


@pytest.mark.slow  # tests/test_coreml.py converts every model at 1024 by default, with structural checks
def test_coreml_conversion_1024(model, inputs_1024):
    mlmodel, ops = mlprogram_of(model, *inputs_1024)
    spec = mlmodel.get_spec()
    assert [i.name for i in spec.description.input] == ["image", "mask"]
    assert [o.name for o in spec.description.output] == ["inpainted"]
    assert ops.count("upsample_nearest_neighbor") == 14 and ops.count("conv") == 73 + 7 + 14
    assert "pad" not in ops


@pytest.mark.slow
@pytest.mark.parametrize("size", [2048, 4096])
@pytest.mark.parametrize("opset", [18, 13])
def test_onnx_export_high_resolution_matches_pytorch(model, tmp_path, size, opset):
    inputs = make_inputs(size, size, seed=9)
    with torch.inference_mode():
        reference = model(*inputs)
    _check_onnx(model, inputs, reference, tmp_path / f"migan_{opset}_{size}.onnx", size, opset)
