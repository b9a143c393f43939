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


@pytest.fixture(scope="session")
def onnx_artifact(tmp_path_factory):
    """RETHINED dense at 1024, opset 18, exported through the shared driver."""
    from exporters import ExportRequest, export, get_exporter

    out = tmp_path_factory.mktemp("artifacts")
    return export(ExportRequest("rethined", 1024, 1024, "onnx"), get_exporter("onnx"), out)


@pytest.fixture(scope="module")
def inputs_1024():
    """Image and mask at 1024 for parity tests; ``model`` is the requesting test module's own fixture."""
    return make_inputs(1024, 1024, seed=3)


@pytest.fixture(scope="module")
def reference_1024(model, inputs_1024):
    with torch.inference_mode():
        return model(*inputs_1024)
