"""``deploy(model)``: the inference form (branches re-parameterised, BatchNorm folded), checked equal to the input."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import DeployMismatchError
from ..inputs import make_inputs
from .fuse_bn import fuse_batchnorm
from .reparameterize import Reparameterizable, reparameterize_model

DEPLOY_ATOL = 1e-4


def deploy(model: nn.Module, *, check_size: tuple[int, int] | None = None, atol: float = DEPLOY_ATOL,
           seed: int = 0) -> nn.Module:
    """Return the inference form of ``model`` (a copy, eval mode) after verifying it on random inputs.

    ``check_size`` is the (H, W) of the equivalence check; by default the smallest size the model accepts.
    Raises :class:`DeployMismatchError` if the max abs difference to the train-time form reaches ``atol``.
    The result carries ``deploy_check = {"max_abs_error", "size", "atol", "reparameterized", "batchnorm_folded",
    "leftovers"}``: what was transformed, how, and what survived (a BatchNorm no pass could fold).
    """
    reference = model.eval()
    deployed = copy.deepcopy(reference)
    reparameterized = reparameterize_model(deployed)
    folded = fuse_batchnorm(deployed)
    deployed.eval()

    if check_size is None:
        side = reference.constraint.minimum
        check_size = (side, side)
    image, mask = make_inputs(*check_size, seed=seed)
    with torch.inference_mode():
        expected = reference(image, mask)
        actual = deployed(image, mask)
    error = float((expected - actual).abs().max())
    if not error < atol:
        raise DeployMismatchError(f"deploy form differs from the train-time form by {error:.3g} (atol {atol:g})")
    deployed.deploy_check = {"max_abs_error": error, "size": list(check_size), "atol": atol,
                             "reparameterized": reparameterized, "batchnorm_folded": folded,
                             "leftovers": deploy_leftovers(deployed)}
    return deployed


def deploy_leftovers(model: nn.Module) -> list[str]:
    """Names of modules that should not survive deploy: BatchNorms and blocks still in multi-branch form."""
    leftovers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            leftovers.append(f"{name} (BatchNorm)")
        elif isinstance(module, Reparameterizable) and not module.is_reparameterized:
            leftovers.append(f"{name} (multi-branch)")
    return leftovers
