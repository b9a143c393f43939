"""The registry's seeding contract, for every registered model: the same seed gives the same weights."""

from __future__ import annotations

import pytest
import torch

from rethined_bench import create_model


@pytest.mark.parametrize("name,key", [
    ("rethined", "coarse.encoder.0.0.conv_branches.0.0.weight"),
    ("migan", "encoder.b512.fromrgb.weight"),
    ("coordfill", "refine.block1.add.ffc.convl2l.weight"),
])
def test_seeded_weights_are_deterministic(name, key):
    def weights(seed: int) -> dict[str, torch.Tensor]:
        model = create_model(name, seed=seed)
        return getattr(model, "net", model).state_dict()

    a, b, c = weights(7), weights(7), weights(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[key], c[key])
