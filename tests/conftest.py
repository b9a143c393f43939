"""Shared fixtures: deployed models and exported artifacts are built once per session (they cost seconds)."""

from __future__ import annotations

import pytest
import torch

import rethined_bench as rb
from rethined_bench.inputs import make_inputs
from rethined_bench.optimize import deploy


@pytest.fixture(scope="session")
def rethined_train():
    return rb.create_model("rethined")


@pytest.fixture(scope="session")
def rethined_deployed(rethined_train):
    return deploy(rethined_train)


def export_here(request, out, **options):
    """The shared export driver with the target's exporter and, for parity, its local runner (as the CLI does)."""
    from exporters import export
    from rethined_bench.backends import create_exporter, local_runner

    return export(request, create_exporter(request.target), out, parity_runner=local_runner(request.target),
                  **options)


@pytest.fixture(scope="session")
def onnx_artifact(tmp_path_factory):
    """RETHINED dense at 1024, opset 18, exported through the shared driver."""
    from exporters import ExportRequest

    return export_here(ExportRequest("rethined", 1024, 1024, "onnx"), tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def inputs_1024():
    """Image and mask at 1024 for parity tests; ``model`` is the requesting test module's own fixture."""
    return make_inputs(1024, 1024, seed=3)


@pytest.fixture(scope="module")
def reference_1024(model, inputs_1024):
    with torch.inference_mode():
        return model(*inputs_1024)


@pytest.fixture(scope="session")
def assert_ignores_hole_content():
    """``check(model, image, mask, expected)``: the output must stay ``expected`` (the output for ``image``) bit for
    bit when every hole pixel is replaced by noise. Catches a stage fed ``image`` instead of the known image (hole
    content leaking into the output); the contract says the hole is unknown."""

    def check(model, image: torch.Tensor, mask: torch.Tensor, expected: torch.Tensor) -> None:
        noise = torch.rand(image.shape, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            out = model(image * (1 - mask) + noise * mask, mask)
        assert torch.equal(out, expected), f"hole content leaks: max diff {float((out - expected).abs().max())}"

    return check


def mlprogram_of(model, image: torch.Tensor, mask: torch.Tensor):
    """``model`` converted to a Core ML ML Program the way the model tests check it (torch.export, iOS16, the
    pipeline's I/O names), and the op types of its functions; skips without the coreml extra."""
    ct = pytest.importorskip("coremltools", reason="the coreml extra is not installed")
    program = torch.export.export(model, (image, mask)).run_decompositions({})
    mlmodel = ct.convert(program, inputs=[ct.TensorType(name="image", shape=image.shape),
                                          ct.TensorType(name="mask", shape=mask.shape)],
                         outputs=[ct.TensorType(name="inpainted")], convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS16)
    ops = [op.op_type for function in mlmodel._mil_program.functions.values() for op in function.operations]
    return mlmodel, ops
