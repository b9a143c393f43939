"""WavePaint: the official checkpoint layout of both configurations, the Haar DWT conv against the 2×2-block formula,
the GELU form per export target, and BatchNorm folding (including the generic ConvTranspose fold it needs).

The pipeline contract (known pixels, hole content never read, sizes refused, deploy equal to train, ONNX parity,
strict round trip) is ``tests/test_model_contract.py``'s. The official layouts are compared with
``shared/reference/state_dicts/wavepaint_*.json`` (the parameter manifests of
``remag2069/WaveMix-Inpainting@6da2b5e:model.py:WavePaint``) where that directory is present, and always with the
sha256 of their key/shape/dtype listing, so the check also runs from a fresh clone. Core ML conversion at 1024 is
``-m slow``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import rethined_bench.models.wavepaint as wavepaint  # registers "wavepaint"
from rethined_bench.inputs import make_inputs
from rethined_bench.models import create_model, get_model_spec
from rethined_bench.models.blocks import randomize_batchnorm
from rethined_bench.optimize import deploy

from conftest import mlprogram_of

MANIFESTS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "state_dicts"
# variant -> (manifest file, sha256 of json.dumps(manifest["state_dict"]), parameters, state_dict keys)
OFFICIAL = {
    "4x4": ("wavepaint_4x4_d128.json", "ff7b808a15f263e774a251da989e21665f33fece05e62dc3fe796d07bee74be0",
            6_690_608, 288),
    "8x4": ("wavepaint_8x4_d128.json", "4a31914d0f7bf55c8b6341fdad665eb28e67ad1e2064c851b20149d1f77e45be",
            13_381_216, 576),
}
TARGETS = ("onnx", "coreml", "tensorrt", "qnn")


def layout(net: nn.Module) -> list[list]:
    """The state_dict as the manifests list it: [key, shape, dtype] in order."""
    return [[key, list(value.shape), str(value.dtype).removeprefix("torch.")]
            for key, value in net.state_dict().items()]


@pytest.mark.parametrize("variant", list(OFFICIAL))
def test_state_dict_and_parameter_count_are_official(variant):
    file, digest, params, keys = OFFICIAL[variant]
    net = create_model("wavepaint", variant).net
    ours = layout(net)
    if (MANIFESTS / file).is_file():
        manifest = json.loads((MANIFESTS / file).read_text())
        assert ours == manifest["state_dict"]
        assert (manifest["param_count"], manifest["num_keys"]) == (params, keys)
    assert hashlib.sha256(json.dumps(ours).encode()).hexdigest() == digest
    assert sum(p.numel() for p in net.parameters()) == params and len(ours) == keys


def haar_reference(x: torch.Tensor) -> torch.Tensor:
    """One-level Haar DWT from the 2×2-block formula: [LL of every channel, then c0.b0, c0.b1, c0.b2, c1.b0, …]."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    low = (a + b + c + d) / 2
    bands = torch.stack([(a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2], dim=2)
    return torch.cat([low, bands.flatten(1, 2)], dim=1)


def test_dwt_conv_is_the_haar_transform_in_the_official_channel_order():
    x = torch.randn(2, 5, 6, 8, generator=torch.Generator().manual_seed(0))
    out = wavepaint.HaarDWT(5)(x)
    assert out.shape == (2, 20, 3, 4)
    torch.testing.assert_close(out, haar_reference(x), atol=1e-6, rtol=0)
    # orthonormal, as pywt's db1: the energy is kept
    torch.testing.assert_close(out.square().sum(), x.square().sum())


def test_gelu_form_follows_the_export_target():
    """Exact GELU where the target has ``Erf`` (ONNX, Core ML, TensorRT), tanh for QNN; the model builds it."""
    spec = get_model_spec("wavepaint")
    for variant in spec.variants:
        assert {target: spec.form_options(variant, target)["gelu"] for target in TARGETS} == {
            "onnx": "exact", "coreml": "exact", "tensorrt": "exact", "qnn": "tanh"}
    for target, approximate in (("onnx", "none"), ("qnn", "tanh")):
        model = create_model("wavepaint", **spec.form_options(spec.default_variant, target))
        assert {m.approximate for m in model.modules() if isinstance(m, nn.GELU)} == {approximate}


def test_tanh_gelu_is_close_to_the_exact_form_on_the_whole_model():
    image, mask = make_inputs(32, 32, seed=2)
    with torch.inference_mode():
        exact = create_model("wavepaint")(image, mask)
        tanh = create_model("wavepaint", gelu="tanh")(image, mask)
    difference = float((exact - tanh).abs().max())
    assert 0 < difference < 1e-3  # measured 9.5e-5 at 256² (module docstring)


@pytest.mark.parametrize("gelu,has_erf", [("exact", True), ("tanh", False)])
def test_qnn_form_exports_without_erf(gelu, has_erf, tmp_path):
    """The ONNX QNN gets (TorchScript exporter, opset 17) has no standalone ``Erf`` in the tanh form."""
    from exporters.onnx import export_onnx
    from exporters.qnn import QNN_OPSET

    model = wavepaint.WavePaint(num_modules=1, blocks_per_module=1, dim=16, gelu=gelu).eval()
    path = export_onnx(model, tmp_path / "tiny.onnx", 32, 32, opset=QNN_OPSET, simplify=False)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ("Erf" in ops) == has_erf
    assert ("Tanh" in ops) != has_erf


def small(**options) -> nn.Module:
    """A 2 modules × 2 blocks, d = 32 WavePaint: the same structure at a tenth of the cost."""
    return create_model("wavepaint", num_modules=2, blocks_per_module=2, dim=32, **options)


def test_deploy_folds_every_batchnorm_the_wavepaint_way():
    """Per module, B + 1 ConvTranspose+BatchNorm pairs (the blocks' and decoder1's) fold into the transposed convs;
    the post-GELU BatchNorm becomes the module's depthwise 1×1 conv."""
    model = small()
    randomize_batchnorm(model, torch.Generator().manual_seed(3))
    deployed = deploy(model)
    assert deployed.deploy_check["batchnorm_folded"]["structural"] == 2 * (2 + 1)
    assert deployed.deploy_check["reparameterized"] == 2
    module = deployed.net.wavemodules[0]
    assert isinstance(module.depthconv[2], nn.Conv2d) and module.depthconv[2].groups == 32
    features = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        torch.testing.assert_close(module.depthconv(features), model.net.wavemodules[0].depthconv(features))


def test_non_square_multiples_of_four_run():
    model = small()
    image, mask = make_inputs(36, 40, seed=6)
    with torch.inference_mode():
        assert model(image, mask).shape == (1, 3, 36, 40)


@pytest.mark.slow  # converting the 4×4 model at 1024² takes 15 s on two cores
def test_coreml_conversion_1024():
    spec = get_model_spec("wavepaint")
    model = deploy(create_model("wavepaint", **spec.form_options(spec.default_variant, "coreml")))
    _, ops = mlprogram_of(model, *make_inputs(1024, 1024, seed=7))
    ops = set(ops)
    assert {"conv", "conv_transpose", "gelu"} <= ops
    assert "batch_norm" not in ops
