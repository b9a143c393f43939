"""The user's own model (tests/user_nets.py) through rbench: import path and entry point, generic deploy transforms
with the equality check, options as variants, export with parity, a measured sweep and its listing, via the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rethined_bench.errors import DeployMismatchError, RbenchError
from rethined_bench.models import create_model, get_model_spec
from rethined_bench.models.user import option_variant, parse_options
from rethined_bench.optimize import deploy

TESTS = Path(__file__).resolve().parent
NET = "user_nets:build_net"


def rbench(*args: str, cwd: Path, extra_path: str = "") -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [str(TESTS), extra_path, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "rethined_bench.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=os.environ | {"PYTHONPATH": path, "COLUMNS": "120"})


def test_a_user_models_batchnorms_and_repvgg_block_are_found_and_checked_equal():
    model = create_model(NET)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4
    deployed = deploy(model, check_size=(64, 64))
    check = deployed.deploy_check
    assert check["max_abs_error"] < 1e-5 and check["leftovers"] == []
    assert check["reparameterized"] == 1  # the RepVGG block's own switch_to_deploy()
    assert check["batchnorm_folded"] == {"structural": 0, "graph": 1, "graph_trace": "ok"}  # the stem, by fx graph
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())


def test_a_deploy_that_breaks_the_model_is_refused():
    """Plant the bug the equality check exists for: a switch that forgets the identity branch."""
    model = create_model(NET)
    block = type(model.block)
    original = block.switch_to_deploy

    def forgetful(self):
        with torch.no_grad():
            self.bn_id.weight.zero_(), self.bn_id.bias.zero_()
        original(self)

    block.switch_to_deploy = forgetful
    try:
        with pytest.raises(DeployMismatchError, match="deploy form differs"):
            deploy(model, check_size=(64, 64))
    finally:
        block.switch_to_deploy = original


def test_import_paths_options_and_their_errors():
    spec = get_model_spec(NET)
    assert spec.source == f"import path {NET}" and spec.constraint.multiple_of == 2
    assert spec.summary.startswith("A tiny encoder/decoder inpainter")
    label = option_variant(NET, parse_options(["width=16"]))
    assert label == "width=16" and create_model(NET, label).stem.out_channels == 16
    assert parse_options(["flag=true", "name=tiny", "ratio=0.5"]) == {"flag": True, "name": "tiny", "ratio": 0.5}
    with pytest.raises(RbenchError, match="does not take options"):
        create_model(NET, option_variant(NET, {"depth": 3}))
    with pytest.raises(RbenchError, match="has no attribute missing"):
        get_model_spec("user_nets:missing")
    with pytest.raises(RbenchError, match="--option is for user models"):
        option_variant("rethined", {"width": 2})


def test_export_run_and_list_a_user_model_through_the_cli(tmp_path):
    exported = rbench("export", "--model", NET, "--option", "width=16", "--res", "64", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    [manifest] = (tmp_path / "artifacts").glob("*.json")
    data = json.loads(manifest.read_text())
    assert manifest.name == "user_nets_build_net-width=16_onnx-fp32_64x64.onnx.json"  # no ':' in file names
    assert data["parity"]["status"] == "ok" and data["deploy_check"]["reparameterized"] == 1
    assert "BatchNormalization" not in data["graph"]["ops"]

    run = rbench("run", "--device", "host-cpu", "--model", NET, "--res", "64", "--processes", "3", "--min-iters",
                 "5", "--min-time", "0", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 ok" in run.stdout
    odd = rbench("run", "--device", "host-cpu", "--model", NET, "--res", "63", cwd=tmp_path)
    assert odd.returncode == 0 and "1 unsupported" in odd.stdout  # the size it declares it cannot take
    assert "multiples of 2 (one stride-2 stage)" in " ".join(odd.stdout.split())


def test_an_entry_point_model_is_listed_with_its_source(tmp_path):
    """A package registering ``rbench.models`` entry points (a dist-info on the path, as pip would install it)."""
    dist = tmp_path / "site" / "acme_inpaint-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-inpaint\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[rbench.models]\nacme-tiny = {NET}\n")
    listed = rbench("models", "--json", cwd=tmp_path, extra_path=str(tmp_path / "site"))
    assert listed.returncode == 0, listed.stderr
    acme = next(model for model in json.loads(listed.stdout) if model["name"] == "acme-tiny")
    assert acme["source"] == f"entry point {NET} (acme-inpaint)"
    table = rbench("models", cwd=tmp_path, extra_path=str(tmp_path / "site"))
    assert any("acme-tiny" in line and "entry point" in line for line in table.stdout.splitlines())


def test_a_size_an_undeclared_model_cannot_take_is_one_line(tmp_path):
    from conftest import export_here
    from exporters import ExportRequest

    with pytest.raises(RbenchError, match=r"model user_nets:build_undeclared fails at 63x63: The size of tensor a \(64\) must match"):
        export_here(ExportRequest("user_nets:build_undeclared", 63, 63, "onnx"), tmp_path, count_work=False)
    assert export_here(ExportRequest("user_nets:build_undeclared", 64, 64, "onnx"), tmp_path,
                       count_work=False).manifest["parity"]["status"] == "ok"
