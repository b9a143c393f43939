"""RETHINED: parameter budget, deploy equivalence, masking semantics, upscaling modes, contract."""

from __future__ import annotations

import pytest
import torch

import rethined_bench as rb
from rethined_bench.errors import UnsupportedResolutionError
from rethined_bench.inputs import make_inputs
from rethined_bench.models.rethined import MASK_BIAS, NeuralPatchMatch, mix_dense, mix_topk
from rethined_bench.optimize import deploy_leftovers


def test_default_preset_is_within_ten_percent_of_the_papers_4_3m(rethined_train):
    params = sum(p.numel() for p in rethined_train.parameters())
    assert abs(params - 4.3e6) / 4.3e6 < 0.10
    assert rb.get_model_spec("rethined").paper_claims["table3"]["params"] == 4.3


def test_deploy_form_equals_train_form_and_has_no_batchnorm_or_branches(rethined_train, rethined_deployed):
    assert rethined_deployed.deploy_check["max_abs_error"] < 1e-4
    assert deploy_leftovers(rethined_deployed) == []
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in rethined_train.modules())
    image, mask = make_inputs(1024, 1024, seed=3)
    with torch.inference_mode():
        error = (rethined_train(image, mask) - rethined_deployed(image, mask)).abs().max()
    assert error < 1e-4


@pytest.mark.parametrize("variant", ["dense", "top1"])
def test_known_pixels_are_preserved_exactly_and_output_is_in_range(variant):
    model = rb.create_model("rethined", variant)
    image, mask = make_inputs(1024, 1024, seed=1)
    with torch.inference_mode():
        out = model(image, mask)
    assert out.shape == image.shape
    known = mask == 0
    assert torch.equal(out.expand_as(image)[known.expand_as(image)], image[known.expand_as(image)])
    assert out.min() >= 0 and out.max() <= 1
    hole = mask.bool().expand_as(image)
    assert not torch.equal(out[hole], image[hole])  # the hole is actually filled


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


def test_a_single_hole_pixel_makes_its_patch_a_hole_patch():
    """Upstream flags a patch from its top-left pixel only (models.md §2.7 bug 1); any hole pixel must count."""
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 3, 5] = 1
    attention, hole = _npm_attention(mask)
    assert hole[0, 0] == 1 and hole.sum() == 1
    assert attention[0, :, 0].abs().max() == 0


def test_attention_mask_constant_is_finite_in_fp16():
    assert torch.isfinite(torch.tensor(-MASK_BIAS, dtype=torch.float16))
    assert torch.tensor(-MASK_BIAS, dtype=torch.float16).exp() == 0


@pytest.mark.parametrize("options", [{"patch_size": 16}, {"patch_size": 32}, {"d_k": 2048},
                                     {"feature_conditioning": False}])
def test_ablation_options_build_and_deploy(options):
    from rethined_bench.optimize import deploy

    model = rb.create_model("rethined", **options)
    assert deploy(model).deploy_check["max_abs_error"] < 1e-4
