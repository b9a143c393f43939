"""Files rbench did not export: an ONNX with its own input names, measured, stored under its stem and sha256, and
gated (A/B timing, exact mode on what the file shows), through the CLI; a Core ML package adopted for Core ML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from rethined_bench.errors import RbenchError
from rethined_bench.inputs import inputs_for
from rethined_bench.plain import adopt
from rethined_bench.store import ResultStore


def user_onnx(path: Path, *, extra_relu: bool = False, dynamic: bool = False, half: bool = False) -> Path:
    """photo·(1−hole_mask)·w + hole_mask: inputs named as the user named them, one weight initializer."""
    dtype, np_dtype = (TensorProto.FLOAT16, np.float16) if half else (TensorProto.FLOAT, np.float32)
    nodes = [helper.make_node("Sub", ["one", "hole_mask"], ["keep"]), helper.make_node("Mul", ["photo", "keep"], ["a"]),
             helper.make_node("Mul", ["a", "w"], ["b"]), helper.make_node("Add", ["b", "hole_mask"],
                                                                          ["pre" if extra_relu else "restored"])]
    if extra_relu:
        nodes.append(helper.make_node("Relu", ["pre"], ["restored"]))
    batch = "n" if dynamic else 1
    graph = helper.make_graph(
        nodes, "user", [helper.make_tensor_value_info("photo", dtype, [batch, 3, 48, 64]),
                        helper.make_tensor_value_info("hole_mask", dtype, [batch, 1, 48, 64])],
        [helper.make_tensor_value_info("restored", dtype, [batch, 3, 48, 64])],
        [helper.make_tensor("one", dtype, [], np.ones((), np_dtype).tobytes(), raw=True),
         helper.make_tensor("w", dtype, [3, 1, 1], np.full((3, 1, 1), 0.9, np_dtype).tobytes(), raw=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def rbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rethined_bench.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_a_plain_onnx_is_adopted_from_what_the_file_shows(tmp_path):
    artifact = adopt(user_onnx(tmp_path / "net.onnx"), tmp_path / "artifacts")
    manifest = artifact.manifest
    assert [(i["name"], i["shape"], i["dtype"]) for i in manifest["inputs"]] == [
        ("photo", [1, 3, 48, 64], "float32"), ("hole_mask", [1, 1, 48, 64], "float32")]
    assert manifest["resolution"] == [48, 64] and manifest["variant"] == "file" and manifest["model"] == "net"
    assert manifest["precision"] == "fp32" and manifest["params"]["deploy"] == 4
    assert manifest["graph"]["ops"] == {"Add": 1, "Mul": 2, "Sub": 1}
    assert manifest["parity"]["status"] == "not run"
    inputs = inputs_for(manifest, seed=3)
    assert set(np.unique(inputs["hole_mask"])) == {0.0, 1.0}  # named mask: a binary hole mask
    assert 0.0 <= inputs["photo"].min() and inputs["photo"].max() <= 1.0 and inputs["photo"].dtype == np.float32
    assert np.array_equal(inputs_for(manifest, seed=3)["photo"], inputs["photo"])  # seeded
    half = adopt(user_onnx(tmp_path / "half.onnx", half=True), tmp_path / "artifacts")
    assert half.manifest["precision"] == "fp16" and inputs_for(half.manifest)["photo"].dtype == np.float16


def test_dynamic_shapes_and_non_onnx_files_are_one_line(tmp_path):
    with pytest.raises(RbenchError, match=r"'photo' has the dynamic shape \['n', 3, 48, 64\]"):
        adopt(user_onnx(tmp_path / "dyn.onnx", dynamic=True), tmp_path / "artifacts")
    (tmp_path / "net.pt").write_bytes(b"not onnx")
    with pytest.raises(RbenchError, match="must be an ONNX file \(.onnx\) or a Core ML package"):
        adopt(tmp_path / "net.pt", tmp_path / "artifacts")


def test_rbench_run_measures_a_plain_file_and_stores_it_under_its_stem(tmp_path):
    path = user_onnx(tmp_path / "inpaint_v7.onnx")
    args = ["run", "--device", "host-cpu", "--artifact", str(path), "--processes", "3", "--min-iters", "5",
            "--min-time", "0", "--db", "r.sqlite"]
    done = rbench(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = ResultStore(tmp_path / "r.sqlite").latest("host-cpu")
    assert (result.model, result.variant, result.height, result.width) == ("inpaint_v7", "file", 48, 64)
    assert result.status == "ok" and [len(s) for s in result.samples] == [5, 5, 5] and result.roofline is None
    assert result.artifact_sha256 == adopt(path, tmp_path / "artifacts" / "files").sha256
    assert "Nothing to measure" in rbench(*args, cwd=tmp_path).stdout  # resumed by sha256
    mixed = rbench("run", "--artifact", str(path), "--model", "rethined", cwd=tmp_path)
    assert mixed.returncode == 2 and "--artifact measures the files given" in mixed.stderr


def test_rbench_check_gates_plain_files_on_what_they_show(tmp_path):
    base, same, grown = (user_onnx(tmp_path / "base.onnx"), user_onnx(tmp_path / "same.onnx"),
                         user_onnx(tmp_path / "grown.onnx", extra_relu=True))
    common = ["check", "--processes", "2", "--warmup", "0", "--min-iters", "2", "--min-time", "0",
              "--summary-json", "s.json"]
    passed = rbench(*common, "--baseline", str(base), "--candidate", str(same), cwd=tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    failed = rbench(*common, "--baseline", str(base), "--candidate", str(grown), cwd=tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    structural = json.loads((tmp_path / "s.json").read_text())["structural"]
    assert {(d["metric"], d["failed"]) for d in structural} >= {("Relu", True), ("nodes", True)}


class _UserNet(torch.nn.Module):
    """photo·(1−hole_mask) through one conv, with the user's own input names."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, photo, hole_mask):
        return self.conv(photo * (1 - hole_mask))


def user_mlpackage(path: Path) -> Path:
    """A Core ML package converted here (conversion runs on Linux; prediction needs macOS)."""
    ct = pytest.importorskip("coremltools", reason="the coreml extra is not installed")
    torch.manual_seed(0)
    example = (torch.rand(1, 3, 48, 64), torch.zeros(1, 1, 48, 64))
    program = torch.export.export(_UserNet().eval(), example).run_decompositions({})
    model = ct.convert(program, inputs=[ct.TensorType(name="photo", shape=example[0].shape),
                                        ct.TensorType(name="hole_mask", shape=example[1].shape)],
                       convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                       minimum_deployment_target=ct.target.iOS16)
    model.save(str(path))
    return path


def test_a_core_ml_package_is_adopted_for_core_ml_only(tmp_path):
    package = user_mlpackage(tmp_path / "net.mlpackage")
    manifest = adopt(package, tmp_path / "artifacts").manifest
    assert manifest["target"] == "coreml" and manifest["precision"] == "fp16" and manifest["file"].endswith(
        ".mlpackage")
    assert [(i["name"], i["shape"], i["dtype"]) for i in manifest["inputs"]] == [  # fp16 I/O at iOS16, as converted
        ("photo", [1, 3, 48, 64], "float16"), ("hole_mask", [1, 1, 48, 64], "float16")]
    assert inputs_for(manifest)["photo"].dtype == np.float16
    assert manifest["resolution"] == [48, 64] and manifest["params"]["deploy"] == 3 * 3 * 9 + 3
    assert manifest["graph"]["format"] == "mlprogram" and manifest["graph"]["ops"].get("conv") == 1
    with pytest.raises(RbenchError, match="a .mlpackage file goes to coreml, not onnx"):
        adopt(package, tmp_path / "artifacts", target="onnx")
    with pytest.raises(RbenchError, match="goes to onnx, tensorrt, qnn, not coreml"):
        adopt(user_onnx(tmp_path / "net.onnx"), tmp_path / "artifacts", target="coreml")
    refused = rbench("run", "--device", "host-cpu", "--artifact", str(package), "--db", str(tmp_path / "r.sqlite"),
                     cwd=tmp_path)
    assert refused.returncode == 2 and "goes to coreml, not onnx (device host-cpu runs onnx" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
