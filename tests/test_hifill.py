"""HiFill: the TensorFlow checkpoint's layout, TF padding and resizes, the ACM (validity, fused scores, the TF
softmax), attention transfer and residual aggregation against direct loops, CRA in the pipeline, export forms.

The pipeline contract (known pixels, hole content at 512², sizes, deploy, ONNX parity at 512², state_dict round
trip) is in ``test_model_contract.py``; the checks here are HiFill's own. The loop references are written from the
TF ops' definitions (``conv2d_transpose`` with ``SAME`` padding, ``extract_image_patches``), not from our code.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
import torch
import torch.nn.functional as F

import rethined_bench.models.hifill as hifill  # registers "hifill"
from rethined_bench.inputs import make_inputs
from rethined_bench.models import create_model, get_model_spec, sweep_models
from rethined_bench.models.layers.gated import GatedConv2d, same_padding

from conftest import mlprogram_of

# Hifill-tensorflow@HEAD model_logs/places2/0.index: its generator variables, and their totals per part
TF_GENERATOR_VARIABLES = 192
TF_PARAMS = {"": 2_722_791, "coarse.": 811_489, "refine.": 1_911_302, "refine.re_en_": 319_616,
             "refine.re_dil_": 820_480, "refine.re_att_": 492_032, "refine.re_de_": 279_174}
# sha256 of the sorted lines "name:HxWxIxO" (TF shapes) of those 192 variables, read from the index file
TF_INDEX_SHA256 = "1db2f6865bcacad2ff7910ccd9afbb6a96d49e00fc07a42f5440607a95203976"


@pytest.fixture(scope="module")
def model():
    return create_model("hifill")


@pytest.fixture(scope="module")
def net_512(model):
    """The generator's (refined, attention) and its inputs at 512² (one forward, shared)."""
    image, mask = make_inputs(512, 512, seed=2)
    x = (image * 2 - 1) * (1 - mask)
    with torch.inference_mode():
        refined, attention = model.net(x, mask)
    return mask, refined, attention


# --- checkpoint layout -------------------------------------------------------------------------------------------

def test_parameter_counts_are_the_tensorflow_generators(model):
    state = model.net.state_dict()
    for prefix, expected in TF_PARAMS.items():
        assert sum(v.numel() for k, v in state.items() if k.startswith(prefix)) == expected, prefix


def test_every_parameter_maps_to_its_tensorflow_variable_and_shape(model):
    """The docstring's table as code (:func:`hifill.tf_variable`) yields exactly the checkpoint's 192 names with
    their HWIO shapes: a renamed layer, a wrong gate kind or a swapped channel count changes the digest."""
    lines = []
    for key, value in model.net.state_dict().items():
        shape = value.permute(2, 3, 1, 0).shape if value.ndim == 4 else value.shape
        lines.append(f"{hifill.tf_variable(key)}:{'x'.join(map(str, shape))}")
    assert len(set(lines)) == len(lines) == TF_GENERATOR_VARIABLES
    assert hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest() == TF_INDEX_SHA256


def test_registration():
    spec = get_model_spec("hifill")
    assert not spec.in_default_sweep and "hifill" not in sweep_models(None) and "hifill" in sweep_models(["all"])
    assert spec.paper_key is None and spec.benchmark_variants == ("default",)
    assert spec.constraint.multiple_of == spec.constraint.minimum == 512 and not spec.constraint.square
    with pytest.raises(ValueError, match="softmax"):
        hifill.HiFill(softmax="hard")


# --- TensorFlow padding and resizes ------------------------------------------------------------------------------

def test_same_padding_is_tensorflows():
    assert same_padding(64, 3, 2) == (0, 1)  # TF pads the stride-2 convs at the bottom/right only
    assert same_padding(256, 5, 2) == (1, 2)
    assert same_padding(64, 3, 1, 16) == (16, 16)
    assert same_padding(64, 1, 2) == (0, 0)


def test_stride_2_gated_conv_reads_the_windows_tensorflow_reads():
    """TF ``SAME`` at stride 2 on an even size: output i reads inputs 2i..2i+2, so a delta at 2 reaches outputs 0
    and 1 (PyTorch's symmetric padding would read 2i-1..2i+1 and reach output 1 only)."""
    layer = GatedConv2d(1, 1, 3, stride=2, gate="pixel")
    with torch.no_grad():
        layer.feat.weight.fill_(1.0)
        layer.feat.bias.zero_()
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2, 2] = 1.0
    with torch.no_grad():
        hit = layer(x)[0, 0] != 0
    assert hit.nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


@pytest.mark.parametrize("gate,stride,dilation", [("slice", 2, 1), ("slice", 1, 2), ("pixel", 2, 1)])
def test_gated_conv_is_the_sigmoid_gate_times_elu_features(gate, stride, dilation):
    """The slice gate runs stacked onto the feature conv; the result must be that of the two convs apart."""
    torch.manual_seed(0)
    layer = GatedConv2d(4, 6, 3, stride, dilation, gate=gate)
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        expected = torch.sigmoid(layer.gate(x)) * F.elu(layer.feat(x))
        torch.testing.assert_close(layer(x), expected)
    assert layer.gate.out_channels == (1 if gate == "slice" else 6)


def test_upsample_is_tensorflow_1_bilinear():
    """``resize_bilinear(align_corners=False)`` in TF1: source = destination / factor, the last pixel repeated."""
    x = torch.randn(1, 2, 3, 4)
    fh, fw = 2, 3
    out = hifill.upsample_tf(x, fh, fw)
    expected = torch.empty(1, 2, 3 * fh, 4 * fw)
    for i, j in itertools.product(range(3 * fh), range(4 * fw)):
        y0, x0 = i // fh, j // fw
        y1, x1 = min(y0 + 1, 2), min(x0 + 1, 3)
        dy, dx = i / fh - y0, j / fw - x0
        top = x[..., y0, x0] * (1 - dx) + x[..., y0, x1] * dx
        bottom = x[..., y1, x0] * (1 - dx) + x[..., y1, x1] * dx
        expected[..., i, j] = top * (1 - dy) + bottom * dy
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)  # the resize's scale 1/3 is rounded


# --- attention computing module ----------------------------------------------------------------------------------

def test_key_validity_excludes_blocks_near_the_hole():
    """A key is valid iff its 16×16 block and the 8 blocks around it hold no hole pixel."""
    mask = torch.zeros(1, 1, 512, 512)
    mask[..., 100:140, 300:301] = 1.0
    valid = hifill.key_validity(mask, 32).view(32, 32)
    for i, j in itertools.product(range(32), range(32)):
        region = mask[0, 0, max(16 * i - 16, 0):16 * i + 32, max(16 * j - 16, 0):16 * j + 32]
        assert bool(valid[i, j]) == (region.sum() == 0), (i, j)


def test_scores_are_fused_cosine_scores_of_neighbourhoods():
    """Scores against a loop over the TF definition: conv of the decimated map with its own L2-normalised 3×3
    patches (zero padded), then the two identity-diagonal fuse convs in (h, w) and in (w, h) flat order."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 8)
    grid, n = 4, 16
    src = F.pad(x[..., ::2, ::2], (1, 1, 1, 1))[0]  # (C, 6, 6)
    patch = [src[:, p // grid:p // grid + 3, p % grid:p % grid + 3] for p in range(n)]
    raw = torch.tensor([[float((patch[p] * patch[q]).sum() / patch[q].norm()) for q in range(n)] for p in range(n)])

    def fuse(y: torch.Tensor, order) -> torch.Tensor:
        out = torch.zeros_like(y)
        for p, q in itertools.product(range(n), range(n)):
            for d in (-1, 0, 1):
                if 0 <= order(p) + d < n and 0 <= order(q) + d < n:
                    out[p, q] += y[order.inverse(order(p) + d), order.inverse(order(q) + d)]
        return out

    class RowMajor:
        __call__ = staticmethod(lambda p: p)
        inverse = staticmethod(lambda f: f)

    class ColumnMajor:
        __call__ = staticmethod(lambda p: (p % grid) * grid + p // grid)
        inverse = staticmethod(lambda f: (f % grid) * grid + f // grid)

    expected = fuse(fuse(raw, RowMajor()), ColumnMajor())
    torch.testing.assert_close(hifill.AttentionComputing.scores(x)[0], expected, rtol=1e-5, atol=1e-5)


def test_softmax_keeps_the_tensorflow_quirk_and_the_paper_form_renormalises():
    """"tf": ``softmax(10·s·v)·v``: an invalid key's logit is 0 and stays in the denominator, so rows sum to less
    than 1; "paper": Eq. (2), a softmax over the valid keys. Both are exactly 0 on invalid keys."""
    scores = torch.tensor([[[-0.3, 0.2, 0.1, -0.5]]])
    valid = torch.tensor([[[1.0, 0.0, 1.0, 1.0]]])
    keys = scores[0, 0, [0, 2, 3]] * 10
    tf_row = torch.zeros(4)
    tf_row[[0, 2, 3]] = keys.exp() / (keys.exp().sum() + 1.0)  # + exp(0) of the one invalid key
    paper_row = torch.zeros(4)
    paper_row[[0, 2, 3]] = keys.softmax(0)
    torch.testing.assert_close(hifill.attention_weights(scores, valid, "tf")[0, 0], tf_row)
    torch.testing.assert_close(hifill.attention_weights(scores, valid, "paper")[0, 0], paper_row)
    assert float(tf_row.sum()) < 0.9


def test_generator_attention_uses_known_keys_only(net_512):
    mask, refined, attention = net_512
    valid = hifill.key_validity(mask, 32)[0, 0].bool()
    assert 0 < int(valid.sum()) < 1024
    assert torch.equal(attention[0][:, ~valid], torch.zeros_like(attention[0][:, ~valid]))
    sums = attention.sum(-1)
    assert float(sums.max()) <= 1 + 1e-5 and float(sums.min()) > 0.5
    assert refined.shape == (1, 3, 512, 512) and float(refined.std()) > 0.05  # not degenerate


# --- attention transfer and residual aggregation vs loops --------------------------------------------------------

def transfer_loop(attention: torch.Tensor, x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF ``conv2d_transpose(A, extract_image_patches(x, kernel, stride, SAME), stride, SAME)``, one output patch at
    a time: the patch of query q, placed at ``stride·q − pad``, is the A-weighted sum of every key's patch."""
    size = x.shape[-1]
    grid = size // stride
    pad = (kernel - stride) // 2  # TF SAME: total padding (grid − 1)·stride + kernel − size, smaller half first
    padded = F.pad(x, (pad, kernel, pad, kernel))[0]
    keys = [(i, j) for i in range(grid) for j in range(grid)]
    patches = torch.stack([padded[:, i * stride:i * stride + kernel, j * stride:j * stride + kernel]
                           for i, j in keys])  # (N, C, k, k)
    out = torch.zeros(x.shape[1], size + 2 * kernel, size + 2 * kernel)
    for q, (i, j) in enumerate(keys):
        patch = (attention[0, q].view(-1, 1, 1, 1) * patches).sum(0)
        out[:, i * stride:i * stride + kernel, j * stride:j * stride + kernel] += patch
    return out[None, :, pad:pad + size, pad:pad + size]


@pytest.mark.parametrize("kernel,stride", [(3, 2), (4, 2), (8, 4), (6, 3)])
def test_transfer_equals_the_loop(kernel, stride):
    """(3, 2) is the ACM's own output (4×4 phases restricted to 3×3 taps), (8, 4) an ATM; phases, shifts, tap
    gather and crop all show here."""
    torch.manual_seed(kernel)
    grid, channels = 3, 2
    x = torch.randn(1, channels, grid * stride, grid * stride)
    attention = torch.rand(1, grid * grid, grid * grid) * (torch.rand(1, grid * grid, grid * grid) > 0.5)
    out = hifill.transfer(attention, x, kernel, stride)
    torch.testing.assert_close(out, transfer_loop(attention, x, kernel, stride), rtol=1e-5, atol=1e-5)


def test_residual_aggregation_equals_the_loop():
    """CRA with factors 2 and 3 (a non-square image, 2×3-pixel cells on the 32×32 grid): each query's cell is
    up(LR result) + Σ_key A·(the key's residual cell), the residual being the known image minus up(LR input)."""
    torch.manual_seed(1)
    lr_result, lr_input = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    known = torch.rand(1, 3, 64, 96)
    attention = torch.rand(1, 1024, 1024) * (torch.rand(1, 1024, 1024) > 0.99)
    out = hifill.ContextualResidualAggregation()(lr_result, lr_input, known, attention)
    residual = known - hifill.upsample_tf(lr_input, 2, 3)
    patches = residual[0].unflatten(1, (32, 2)).unflatten(3, (32, 3)).permute(1, 3, 0, 2, 4).reshape(1024, 3, 2, 3)
    expected = hifill.upsample_tf(lr_result, 2, 3)
    for q in range(1024):
        i, j = divmod(q, 32)
        expected[0, :, 2 * i:2 * i + 2, 3 * j:3 * j + 3] += (attention[0, q].view(-1, 1, 1, 1) * patches).sum(0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# --- the pipeline at HR ------------------------------------------------------------------------------------------

def test_cra_pipeline_non_square(model, assert_ignores_hole_content):
    """1024×512 (factors 2 and 1): the generator at 512², CRA in the same forward, known pixels kept, the hole's
    content never read, and the hole gets the known area's high frequencies: rows alternate ±0.2 around a smooth
    image, which the 2×1 box average (the generator's input) cannot see, so only the aggregated residuals can
    carry the stripes into the hole."""
    _, mask = make_inputs(1024, 512, seed=4)
    rows = torch.arange(1024).view(1, 1, 1024, 1)
    image = (0.5 + 0.2 * (1 - 2 * (rows % 2)) + 0.3 * torch.linspace(-0.5, 0.5, 512)).expand(1, 3, 1024, 512)
    with torch.inference_mode():
        out = model(image, mask)
    known = (mask == 0).expand_as(image)
    assert out.shape == image.shape and torch.equal(out[known], image[known])
    assert_ignores_hole_content(model, image, mask, out)
    hole_pairs = (mask[:, :, 0::2] * mask[:, :, 1::2]).bool().expand(1, 3, 512, 512)
    stripes = (out[:, :, 0::2] - out[:, :, 1::2])[hole_pairs]
    assert hole_pairs.sum() > 1000 and float(stripes.mean()) > 0.2


@pytest.mark.slow  # ~40 s on 2 shared cores: export, ONNX Runtime and the PyTorch reference at 1024²
def test_onnx_at_1024_holds_cra_without_fold_ops(tmp_path):
    onnx = pytest.importorskip("onnx")
    from conftest import export_here
    from exporters import ExportRequest

    artifact = export_here(ExportRequest("hifill", 1024, 1024, "onnx"), tmp_path)
    assert artifact.manifest["parity"]["max_abs_error"] < 1e-4, artifact.manifest["parity"]
    ops = {node.op_type for node in onnx.load(str(artifact.path)).graph.node}
    assert {"MatMul", "Softmax", "Conv"} <= ops
    assert not ops & {"Col2Im", "ConvTranspose", "NonZero", "Loop", "If", "GatherND", "ScatterND"}


@pytest.mark.slow  # conversion at 1024² takes longer than 15 s here
def test_coreml_conversion_1024(model):
    _, ops = mlprogram_of(model, *make_inputs(1024, 1024, seed=3))
    ops = set(ops)
    assert {"conv", "matmul", "softmax", "pixel_shuffle", "pixel_unshuffle"} <= ops
