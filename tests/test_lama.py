"""LaMa: the official generator layout per variant, the Lightning-checkpoint filter, and the matmul-DFT form against
torch.fft on the model's real shapes. The pipeline contract, deploy and ONNX parity at the smallest size are
``test_model_contract.py``'s; ONNX parity at 512 and 1024 runs with ``-m slow``.

The official layouts are ``shared/reference/state_dicts/lama_fourier.json`` and ``big_lama.json`` (the parameter
manifests of ``advimman/lama@786f5936:saicinpainting/training/modules/ffc.py:FFCResNetGenerator`` in the
``lama-fourier`` and ``big-lama`` training configs); they are pinned here by the sha256 of their ``state_dict``
lists, so these tests run from a fresh clone without ``../shared``.
"""

from __future__ import annotations

import collections
import hashlib
import json

import pytest
import torch

from rethined_bench.errors import RbenchError
from rethined_bench.inputs import make_inputs
from rethined_bench.models import create_model, get_model_spec
from rethined_bench.models.lama import generator_state

# variant -> (keys, parameters, last key, sha256 of json.dumps of the manifest's [[key, shape, dtype], ...] list)
OFFICIAL = {
    "fourier": (521, 27_048_835, "model.25.bias",
                "3b8b79f019eade0e61c18aed00871695f3f1b33204e40f64327890c8e052dcf5"),
    "big": (989, 50_975_875, "model.34.bias", "896316b51dbcb909886c3244f07fe6f9d03c221dd201ef6b7dcc594bc381d32f"),
}
FORBIDDEN_OPS = {"DFT", "STFT", "Loop", "If", "Scan"}  # no FFT kernel on ORT-CUDA, TensorRT, QNN


@pytest.fixture(scope="module")
def model():
    return create_model("lama")


def layout(net: torch.nn.Module) -> list[list]:
    """``[[key, shape, dtype], ...]`` in state_dict order, as the manifests list them."""
    return [[key, list(value.shape), str(value.dtype).removeprefix("torch.")]
            for key, value in net.state_dict().items()]


@pytest.mark.parametrize("variant", ["fourier", "big"])
def test_state_dict_and_parameter_count_are_official(variant):
    keys, params, last, digest = OFFICIAL[variant]
    net = create_model("lama", variant).net
    ours = layout(net)
    assert len(ours) == keys and sum(p.numel() for p in net.parameters()) == params
    assert ours[0] == ["model.1.ffc.convl2l.weight", [64, 4, 7, 7], "float32"]
    assert ours[-1] == [last, [3], "float32"]  # the output conv's bias, after the blocks and the decoder
    assert hashlib.sha256(json.dumps(ours).encode()).hexdigest() == digest  # names, shapes, dtypes and order


def test_registration():
    spec = get_model_spec("lama")
    assert list(spec.variants) == ["fourier", "big"] and not spec.in_default_sweep
    assert (spec.constraint.multiple_of, spec.constraint.minimum, spec.constraint.square) == (8, 64, False)
    assert {target: spec.form_options("big", target) for target in ("onnx", "tensorrt", "qnn", "coreml")} == {
        "onnx": {"fft": "matmul"}, "tensorrt": {"fft": "matmul"}, "qnn": {"fft": "matmul"}, "coreml": {}}


# --- checkpoints -------------------------------------------------------------------------------------------------

def lightning_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """What LaMa's released ``best.ckpt`` holds: the training module's state_dict (generator, discriminator, losses,
    evaluator) plus Lightning's bookkeeping."""
    modules = {f"generator.{key}": value for key, value in state.items()}
    modules |= {"discriminator.model0.0.weight": torch.zeros(64, 3, 4, 4),
                "loss_resnet_pl.impl.conv1.weight": torch.zeros(64, 3, 7, 7),
                "val_evaluator.scores.ssim.sum": torch.zeros(1)}
    return {"state_dict": modules, "epoch": 40, "global_step": 123}


def assert_same_weights(loaded: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = loaded.net.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], v) for k, v in expected.items())


@pytest.mark.parametrize("form", ["lightning", "plain"])
def test_released_checkpoint_forms_load_strictly(model, tmp_path, form):
    state = model.net.state_dict()
    path = tmp_path / f"{form}.ckpt"
    torch.save(lightning_checkpoint(state) if form == "lightning" else state, path)
    assert_same_weights(create_model("lama", seed=7, weights=path), state)


@pytest.mark.parametrize("key", ["model.5.conv1.ffc.convg2g.fu.bn.running_var", "model.25.bias"])
def test_lightning_checkpoint_missing_a_generator_key_is_rejected(model, tmp_path, key):
    checkpoint = lightning_checkpoint(model.net.state_dict())
    del checkpoint["state_dict"][f"generator.{key}"]
    torch.save(checkpoint, tmp_path / "partial.ckpt")
    with pytest.raises(RbenchError, match=f"do not match.*{key}"):
        create_model("lama", weights=tmp_path / "partial.ckpt")


def test_checkpoint_filter_keeps_exactly_the_generator():
    checkpoint = lightning_checkpoint({"model.1.ffc.convl2l.weight": torch.ones(1)})
    assert list(generator_state(checkpoint["state_dict"])) == ["model.1.ffc.convl2l.weight"]
    plain = {"model.1.ffc.convl2l.weight": torch.ones(1), "discriminator.x": torch.ones(1)}
    assert generator_state(plain) is plain  # not a training checkpoint: left for the strict load to judge


# --- the matmul-DFT form -----------------------------------------------------------------------------------------

def test_matmul_dft_form_equals_torch_fft(model):
    """The whole generator (9 blocks, 18 Fourier units at H/8 × W/8, here a non-square 8×12) as exported (matmul)
    and as the reference (torch.fft); the same seed gives the same weights. ``test_layers.py`` checks the transform
    itself at the bottleneck's sizes for 512 and larger."""
    matmul = create_model("lama", fft="matmul")
    image, mask = make_inputs(64, 96, seed=2)
    with torch.inference_mode():
        expected = model(image, mask)
        assert float((matmul(image, mask) - expected).abs().max()) < 1e-5


def test_seeded_output_is_a_spread_not_a_constant_or_saturated(model):
    image, mask = make_inputs(64, 64, seed=3)
    with torch.inference_mode():
        raw = model.net(torch.cat([image * (1 - mask), mask], dim=1))
    assert 0.08 < float(raw.std()) < 0.3
    assert float(((raw < 0.01) | (raw > 0.99)).float().mean()) < 0.01


# --- export (slow: 512 and 1024) ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("variant,size", [("fourier", 512), ("fourier", 1024), ("big", 1024)])
def test_onnx_export_parity(tmp_path, variant, size):
    import onnx

    from conftest import export_here
    from exporters import ExportRequest

    artifact = export_here(ExportRequest("lama", size, size, "onnx", variant=variant), tmp_path, count_work=False)
    manifest = artifact.manifest
    assert manifest["form"] == {"fft": "matmul"}
    assert manifest["parity"]["status"] == "ok" and manifest["parity"]["max_abs_error"] < 1e-4, manifest["parity"]
    ops = collections.Counter(node.op_type for node in onnx.load(str(artifact.path)).graph.node)
    assert not FORBIDDEN_OPS & set(ops), ops
    blocks = get_model_spec("lama").variants[variant]["blocks"]
    assert ops["MatMul"] >= 12 * 2 * blocks  # 12 per Fourier unit (6 each way), two units per block
