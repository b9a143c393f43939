"""RETHINED: parameter budget, deploy equivalence, masking semantics, upscaling modes, contract."""

from __future__ import annotations

import math

import pytest
import torch

import rethined_bench as rb
from rethined_bench.errors import UnsupportedResolutionError
from rethined_bench.inputs import make_inputs
from rethined_bench.models.blocks import randomize_batchnorm
from rethined_bench.models.rethined import MASK_BIAS, NeuralPatchMatch, mix_dense, mix_topk
from rethined_bench.optimize import deploy, deploy_leftovers


def test_default_preset_is_within_ten_percent_of_the_papers_4_3m(rethined_train):
    params = sum(p.numel() for p in rethined_train.parameters())
    assert abs(params - 4.3e6) / 4.3e6 < 0.10
    assert rb.get_model_spec("rethined").paper_claims["table3"]["params"] == 4.3


def check_deploy_form(**options) -> None:
    """Compare train and deploy forms here, on BatchNorm statistics far from identity (a fold that drops μ, σ², γ or
    β shows). ``deploy()`` raises at its own 1e-4, so asserting on its ``deploy_check`` could never fail: its check is
    switched off and this one is the check."""
    model = rb.create_model("rethined", **options)
    randomize_batchnorm(model, torch.Generator().manual_seed(1))
    deployed = deploy(model, atol=math.inf)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())
    assert deploy_leftovers(deployed) == []
    assert len(list(deployed.modules())) < len(list(model.modules()))
    image, mask = make_inputs(512, 512, seed=3)
    with torch.inference_mode():
        error = float((model(image, mask) - deployed(image, mask)).abs().max())
    assert error < 1e-4


def test_deploy_form_equals_train_form_and_has_no_batchnorm_or_branches():
    check_deploy_form()


@pytest.fixture(scope="module", params=[("dense", "rows"), ("top1", "rows"), ("dense", "compact"),
                                        ("top1", "compact")], ids="-".join)
def variant_1024(request):
    """(model, image, mask, output) per upscaling variant and form at 1024: scale 2, so the attention upscaler runs
    (``compact`` composites the hole patches itself)."""
    variant, form = request.param
    model = rb.create_model("rethined", variant, upscale_form=form)
    image, mask = make_inputs(1024, 1024, seed=1)
    with torch.inference_mode():
        return model, image, mask, model(image, mask)


def test_known_pixels_are_preserved_exactly_and_output_is_in_range(variant_1024):
    """Compositing alone keeps known pixels for any model; the hole must also be painted from the input (a network
    returning zeros or a constant fails the last two checks)."""
    model, image, mask, out = variant_1024
    assert out.shape == image.shape
    known = (mask == 0).expand_as(image)
    assert torch.equal(out[known], image[known])
    assert out.min() >= 0 and out.max() <= 1
    hole = ~known
    assert float(out[hole].std()) > 1e-3  # not a constant (seeded weights: 0.013 dense, 0.044 top1)
    with torch.inference_mode():
        inverted = model(1 - image, mask)
    assert float((inverted[hole] - out[hole]).abs().mean()) > 0.01  # and it follows the known content


def test_hole_content_never_reaches_the_output(variant_1024, assert_ignores_hole_content):
    """Catches a stage (e.g. the HR upscaler) fed ``image`` instead of the known image. Attention only takes known
    patches, so such a leak shows only through the blur of known patches next to the hole: a checkerboard of HR
    patches added to the hole makes every known patch touch it (top-1 may otherwise pick only far ones)."""
    model, image, mask, _ = variant_1024
    squares = torch.arange(1024) // 16  # the HR patch at scale 2
    mask = torch.maximum(mask, ((squares[:, None] + squares[None, :]) % 2).float())
    with torch.inference_mode():
        expected = model(image, mask)
    assert_ignores_hole_content(model, image, mask, expected)


@pytest.mark.parametrize("size", [(1000, 1000), (256, 256), (1024, 1536 + 1), (1024, 1536)])
def test_sizes_that_are_not_square_integer_multiples_of_the_lr_size_are_rejected(size):
    model = rb.create_model("rethined")
    image, mask = torch.rand(1, 3, *size), torch.zeros(1, 1, *size)
    with pytest.raises(UnsupportedResolutionError, match="512"):
        model(image, mask)


def test_dense_and_topk_mixing_agree_exactly_for_one_hot_attention():
    gen = torch.Generator().manual_seed(0)
    n, dim = 64, 48
    index = torch.randint(0, n, (2, n), generator=gen)
    one_hot = torch.nn.functional.one_hot(index, n).float()
    tokens = torch.randn(2, n, dim, generator=gen)
    assert torch.equal(mix_dense(one_hot, tokens), mix_topk(one_hot, tokens, 1))
    assert torch.equal(mix_topk(one_hot, tokens, 1), tokens[torch.arange(2)[:, None], index])


@pytest.mark.parametrize("k", [2, 5])
def test_topk_mixing_renormalises_its_k_largest_weights(k):
    """Against a dense reference: keep each row's k largest weights, rescale them to sum 1, mix. Catches a missing
    renormalisation (only one-hot attention, where it is a no-op, was tested before)."""
    gen = torch.Generator().manual_seed(k)
    attention = torch.softmax(2 * torch.randn(2, 16, 16, generator=gen), dim=-1)
    tokens = torch.randn(2, 16, 6, generator=gen)
    kth_largest = attention.sort(dim=-1, descending=True).values[..., k - 1:k]
    kept = torch.where(attention >= kth_largest, attention, torch.zeros(()))
    expected = (kept / kept.sum(dim=-1, keepdim=True)) @ tokens
    torch.testing.assert_close(mix_topk(attention, tokens, k), expected, rtol=0, atol=1e-6)
    constant = torch.full_like(tokens, 0.7)  # weights summing to 1 reproduce a constant field
    torch.testing.assert_close(mix_topk(attention, constant, k), constant, rtol=0, atol=1e-6)


def test_dense_and_top1_pipelines_agree_when_attention_is_one_hot(monkeypatch):
    """Force one-hot attention through the real NeuralPatchMatch; the HR outputs of both modes must match."""
    original = NeuralPatchMatch.attention

    def hard(self, coarse, feature, hole_tokens):
        weights = original(self, coarse, feature, hole_tokens)
        return torch.nn.functional.one_hot(weights.argmax(-1), weights.shape[-1]).float()

    monkeypatch.setattr(NeuralPatchMatch, "attention", hard)
    image, mask = make_inputs(1024, 1024, seed=2)
    with torch.inference_mode():
        dense = rb.create_model("rethined", "dense")(image, mask)
        top1 = rb.create_model("rethined", "top1")(image, mask)
    assert torch.equal(dense, top1)


def _npm_attention(mask_lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    npm = NeuralPatchMatch(patch=8, feature_channels=0, d_k=32).eval()
    coarse = torch.rand(1, 3, *mask_lr.shape[-2:])
    hole_tokens = torch.nn.functional.max_pool2d(mask_lr, 8, 8).flatten(1)
    with torch.no_grad():
        return npm.attention(coarse, None, hole_tokens), hole_tokens


def test_hole_queries_attend_only_to_known_patches_and_rows_sum_to_one():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 8:40, 16:48] = 1
    attention, hole = _npm_attention(mask)
    hole_keys = hole[0].bool()
    assert attention[0][:, hole_keys].abs().max() == 0
    assert torch.allclose(attention.sum(-1), torch.ones(1, 64))


def test_compact_attention_is_the_hole_rows_and_mixes_like_the_full_matrix():
    """The compact form computes only the hole queries' rows; on a batch (different holes, one item with none, one
    with soft mask values) they equal the full attention's rows (to the products' rounding), and the
    LR result mixed from them equals the full matrix's."""
    torch.manual_seed(0)
    npm = NeuralPatchMatch(patch=8, feature_channels=4, d_k=32).eval()
    coarse, feature = torch.rand(3, 3, 64, 64), torch.rand(3, 4, 8, 8)
    mask = torch.zeros(3, 1, 64, 64)
    mask[0, :, 8:40, 16:48] = 1
    mask[2, :, 40:, :20] = 0.7  # soft: hole tokens 0.7, neither fully hole nor known
    hole_tokens = torch.nn.functional.max_pool2d(mask, 8, 8).flatten(1)
    with torch.no_grad():
        full = npm.attention(coarse, feature, hole_tokens)
        rows = npm.hole_rows(coarse, feature, hole_tokens)
        compact_out, _, _ = npm(coarse, feature, mask, compact=True)
        full_out, _, _ = npm(coarse, feature, mask)
    for item, hole_rows in enumerate(rows):
        assert hole_rows.queries.tolist() == (hole_tokens[item] > 0).nonzero().flatten().tolist()
        torch.testing.assert_close(hole_rows.weights, full[item, hole_rows.queries], rtol=0, atol=1e-6)
    assert rows[1].queries.numel() == 0
    torch.testing.assert_close(compact_out, full_out, rtol=0, atol=1e-6)


def test_a_single_hole_pixel_makes_its_patch_a_hole_patch():
    """Upstream flags a patch from its top-left pixel only (models.md §2.7 bug 1); any hole pixel must count.

    Through the whole pipeline at 512: an image whose 8×8 patches are all the same tile and one hole pixel off its
    patch's corner. As a hole patch, it is filled by attention over the known patches, which all hold the tile there;
    taken for a known patch, it would keep the coarse network's guess. The coherence conv is zeroed so the fill shows
    unaltered."""
    model = rb.create_model("rethined")
    with torch.no_grad():
        model.npm.coherence[-1].weight.zero_()
        model.npm.coherence[-1].bias.zero_()
    tile = 0.2 + 0.6 * torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    image = tile.repeat(1, 1, 64, 64)
    row, col = 20, 30  # the patch; the hole pixel is (3, 5) inside it, not its top-left pixel
    y, x, patch = 8 * row + 3, 8 * col + 5, 64 * row + col
    mask = torch.zeros(1, 1, 512, 512)
    mask[..., y, x] = 1
    captured = {}
    model.npm.register_forward_hook(lambda module, args, out: captured.update(attention=out[1], hole=out[2]))
    with torch.inference_mode():
        out = model(image, mask)
    assert captured["hole"].flatten().nonzero().flatten().tolist() == [patch]
    assert captured["attention"][0, :, patch].abs().max() == 0  # never a source
    torch.testing.assert_close(out[0, :, y, x], tile[0, :, 3, 5], rtol=0, atol=1e-5)


def test_attention_mask_constant_is_finite_in_fp16():
    assert torch.isfinite(torch.tensor(-MASK_BIAS, dtype=torch.float16))
    assert torch.tensor(-MASK_BIAS, dtype=torch.float16).exp() == 0


@pytest.mark.parametrize("options", [{"patch_size": 16}, {"patch_size": 32}, {"d_k": 2048},
                                     {"feature_conditioning": False}])
def test_ablation_options_build_and_deploy(options):
    check_deploy_form(**options)


# --- the upscaler's forms: the same function, laid out for speed -------------------------------------------------

def _outputs_by_form(image: torch.Tensor, mask: torch.Tensor, **options) -> dict[tuple[str, str], torch.Tensor]:
    """(variant, form) -> output; ``reference`` is the original formulation (unshuffle, mix, shuffle)."""
    forms = {"top1": ("reference", "rows", "compact"), "dense": ("reference", "rows", "compact")}
    outputs = {}
    with torch.inference_mode():
        for variant, names in forms.items():
            for form in names:
                model = rb.create_model("rethined", variant, upscale_form=form, **options)
                outputs[(variant, form)] = model(image, mask)
    return outputs


def _assert_forms_agree(outputs: dict[tuple[str, str], torch.Tensor]) -> None:
    for (variant, form), output in outputs.items():
        error = float((output - outputs[(variant, "reference")]).abs().max())
        assert error < 1e-5, f"{variant} {form}: {error:.2g} from the reference formulation"


@pytest.mark.parametrize("size", [1024, pytest.param(2048, marks=pytest.mark.slow),
                                  pytest.param(4096, marks=pytest.mark.slow)])
def test_upscaler_forms_compute_the_reference_function(size):
    _assert_forms_agree(_outputs_by_form(*make_inputs(size, size, seed=size)))


def test_upscaler_forms_agree_on_a_batch_and_on_masks_without_holes_or_known_patches():
    """Batch items with different holes (compact works per item), no hole at all (compact's product is empty), and
    every patch a hole (every attention row is zero: top1's weight is 0, not 1). A 128 LR network at 384: scale 3,
    HR patches of 24."""
    small = {"lr_size": 128, "encoder_channels": (8, 16, 16, 32, 32), "encoder_depths": (1, 1, 1, 1, 1)}
    image, mask = make_inputs(384, 384, batch=2, seed=7)
    _assert_forms_agree(_outputs_by_form(image, mask, **small))
    for fill in (0.0, 1.0):
        _assert_forms_agree(_outputs_by_form(image[:1], torch.full_like(mask[:1], fill), **small))
    grid = torch.zeros(1, 1, 384, 384)
    grid[..., ::24, ::24] = 1  # one hole pixel in every HR patch: no known patch, yet known pixels everywhere
    _assert_forms_agree(_outputs_by_form(image[:1], grid, **small))


def test_topk_rows_form_weights_each_gathered_patch_like_the_reference():
    """k = 3: one gather per key, each scaled by its renormalised weight (top1 skips the weights, exactly 1)."""
    small = {"lr_size": 128, "encoder_channels": (8, 16, 16, 32, 32), "encoder_depths": (1, 1, 1, 1, 1),
             "upscale": "topk", "topk": 3}
    image, mask = make_inputs(384, 384, seed=8)
    with torch.inference_mode():
        outputs = [rb.create_model("rethined", upscale_form=form, **small)(image, mask)
                   for form in ("reference", "rows")]
    assert float((outputs[0] - outputs[1]).abs().max()) < 1e-5


def test_each_target_gets_the_upscaler_form_it_runs():
    spec = rb.get_model_spec("rethined")
    for variant in ("dense", "top1"):
        assert spec.form_options(variant, "onnx") == {"upscale_form": "compact"}
        for target in ("tensorrt", "coreml", "qnn"):  # no data-dependent shapes there
            assert spec.form_options(variant, target) == {}
    assert rb.create_model("rethined").upscaler.form == "rows"
