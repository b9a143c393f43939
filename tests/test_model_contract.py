"""The pipeline contract every registered model keeps (DESIGN.md, "One pipeline contract for every model").

One module parametrised over the registry, so that registering a model is what puts it under these checks: known
pixels unchanged and the hole painted from the known content, hole content never read, sizes the model cannot take
refused in one line, the deploy form equal to the train form, ONNX parity through the export driver, and a strict
state_dict round trip. Each runs at the model's smallest accepted square size; model-specific behaviour (upscalers,
official layouts, export forms) stays in the model's own test module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import rethined_bench as rb
from rethined_bench.errors import RbenchError, UnsupportedResolutionError
from rethined_bench.inputs import make_inputs
from rethined_bench.models.blocks import randomize_batchnorm
from rethined_bench.optimize import deploy, deploy_leftovers

from conftest import export_here

MODELS = [name for name in rb.list_models() if rb.get_model_spec(name).source == "built-in"]


def smallest_side(constraint: rb.ResolutionConstraint) -> int:
    """The smallest square size ``constraint`` accepts."""
    return math.ceil(constraint.minimum / constraint.multiple_of) * constraint.multiple_of


@dataclass
class Case:
    name: str
    model: torch.nn.Module
    side: int
    image: torch.Tensor
    mask: torch.Tensor
    output: torch.Tensor


@pytest.fixture(scope="module", params=MODELS)
def case(request) -> Case:
    """The default variant at its smallest size, with its output for seeded inputs."""
    spec = rb.get_model_spec(request.param)
    side = smallest_side(spec.constraint)
    model = rb.create_model(request.param)
    image, mask = make_inputs(side, side, seed=5)
    with torch.inference_mode():
        output = model(image, mask)
    return Case(request.param, model, side, image, mask, output)


def test_known_pixels_are_kept_and_the_hole_is_painted_from_the_known_content(case):
    """Compositing keeps known pixels for any model; a network that returns a constant, or ignores the image, fails
    the last two checks."""
    out = case.output
    assert out.shape == case.image.shape and out.dtype == torch.float32
    known = (case.mask == 0).expand_as(case.image)
    assert torch.equal(out[known], case.image[known])
    assert out.min() >= 0 and out.max() <= 1
    hole = ~known
    assert float(out[hole].std()) > 1e-4, "the hole is painted with a constant"
    with torch.inference_mode():
        inverted = case.model(1 - case.image, case.mask)
    assert float((inverted[hole] - out[hole]).abs().max()) > 1e-3, "the painted hole ignores the known content"


def test_hole_content_never_reaches_the_output(case, assert_ignores_hole_content):
    assert_ignores_hole_content(case.model, case.image, case.mask, case.output)


def refused_sizes(constraint: rb.ResolutionConstraint, side: int) -> list[tuple[int, int]]:
    """Sizes next to ``side`` that break each rule the constraint has."""
    sizes = []
    if constraint.multiple_of > 1:
        sizes.append((side + constraint.multiple_of // 2, side))
    if constraint.minimum > constraint.multiple_of:
        below = (constraint.minimum // constraint.multiple_of - 1) * constraint.multiple_of
        sizes.append((below, below) if below else (side, side))
    if constraint.square:
        sizes.append((side, side + constraint.multiple_of))
    return [size for size in sizes if size != (side, side)]


def test_sizes_the_model_cannot_take_are_refused_in_one_line(case):
    constraint = rb.get_model_spec(case.name).constraint
    sizes = refused_sizes(constraint, case.side)
    assert sizes, f"{case.name} declares no constraint to check"
    for height, width in sizes:
        image, mask = torch.zeros(1, 3, height, width), torch.zeros(1, 1, height, width)
        with pytest.raises(UnsupportedResolutionError, match=f"{height}x{width}") as info:
            case.model(image, mask)
        assert "\n" not in str(info.value)


def test_deploy_form_equals_the_train_form(case):
    """On BatchNorm statistics far from identity, so that a fold dropping μ, σ², γ or β shows. ``deploy()``'s own
    check is switched off (``atol=inf``): this one is the check."""
    model = rb.create_model(case.name)
    randomize_batchnorm(model, torch.Generator().manual_seed(1))
    deployed = deploy(model, atol=math.inf)
    assert deploy_leftovers(deployed) == []
    with torch.inference_mode():
        error = float((model(case.image, case.mask) - deployed(case.image, case.mask)).abs().max())
    assert error < 1e-4


def test_onnx_export_has_recorded_parity(case, tmp_path):
    from exporters import ExportRequest

    artifact = export_here(ExportRequest(case.name, case.side, case.side, "onnx"), tmp_path, count_work=False)
    parity = artifact.manifest["parity"]
    assert parity["status"] == "ok" and parity["max_abs_error"] < 1e-4, parity
    assert artifact.manifest["form"] == rb.get_model_spec(case.name).form_options(
        artifact.manifest["variant"], "onnx")


def _state_file(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def test_state_dict_round_trip_is_strict(case, tmp_path):
    """A checkpoint of the native network loads exactly into a differently seeded model; one missing or one extra
    key is refused (official loaders that skip keys silently are not copied)."""
    state = dict(getattr(case.model, "net", case.model).state_dict())
    path = _state_file(state, tmp_path / "exact.pt")
    with torch.inference_mode():
        assert not torch.equal(rb.create_model(case.name, seed=1)(case.image, case.mask), case.output)
        assert torch.equal(rb.create_model(case.name, seed=1, weights=path)(case.image, case.mask), case.output)

    missing = dict(state)
    missing.pop(next(iter(missing)))
    extra = state | {"unexpected.weight": torch.zeros(1)}
    for label, edited in (("missing", missing), ("extra", extra)):
        with pytest.raises(RbenchError, match="do not match"):
            rb.create_model(case.name, weights=_state_file(edited, tmp_path / f"{label}.pt"))

