"""ONNX export: checker, parity with PyTorch through ONNX Runtime, manifest, reuse, corruption detection."""

from __future__ import annotations

import json
from dataclasses import replace

import onnx
import pytest

from conftest import export_here
from exporters import ExportRequest
from rethined_bench.artifact import Artifact
from rethined_bench.backends import create_exporter
from rethined_bench.errors import RbenchError, UnknownNameError


def test_exported_graph_matches_pytorch_and_has_no_batchnorm(onnx_artifact):
    manifest = onnx_artifact.manifest
    assert onnx_artifact.path.name == "rethined_onnx-fp32_1024x1024.onnx"
    assert manifest["parity"]["status"] == "ok"
    assert manifest["parity"]["max_abs_error"] < 1e-4
    graph = onnx.load(str(onnx_artifact.path))
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert "BatchNormalization" not in ops
    assert manifest["onnx"]["ops"] == {op: sum(n.op_type == op for n in graph.graph.node) for op in ops}
    assert manifest["graph"]["format"] == "onnx" and manifest["graph"]["ops"] == manifest["onnx"]["ops"]
    assert manifest["graph"]["node_count"] == len(graph.graph.node)
    assert sum(manifest["graph"]["weight_bytes"].values()) == manifest["onnx"]["initializer_bytes"]
    assert manifest["graph"]["weight_bytes"]["float32"] > 0.99 * manifest["onnx"]["initializer_bytes"]
    assert [i.name for i in graph.graph.input] == ["image", "mask"]
    assert [o.name for o in graph.graph.output] == ["inpainted"]
    assert manifest["onnx"]["opset"] == 18


def test_manifest_records_what_the_artifact_is(onnx_artifact):
    manifest = json.loads(onnx_artifact.manifest_path.read_text())
    for key in ("model", "variant", "resolution", "target", "precision", "inputs", "outputs", "sha256", "size_bytes",
                "tool_versions", "exported_at", "parity", "deploy_check", "work", "params", "graph"):
        assert key in manifest, key
    assert manifest["resolution"] == [1024, 1024]
    assert manifest["inputs"][1]["shape"] == [1, 1, 1024, 1024]
    assert manifest["work"]["params"] == manifest["params"]["deploy"]
    assert manifest["work"]["fvcore_gmacs"] > 0 and manifest["work"]["gflops"] > manifest["work"]["fvcore_gmacs"]
    assert "torch" in manifest["tool_versions"] and "onnxruntime" in manifest["tool_versions"]


def test_opset_13_never_reuses_an_opset_18_file_of_the_same_name(tmp_path):
    """TensorRT 8.2 needs opset 13: the same file name at opset 18 must be re-exported, not reused."""
    request = ExportRequest("rethined", 1024, 1024, "onnx", variant="dense")  # the compact upscaler at both
    at_18 = export_here(request, tmp_path, count_work=False)
    at_13 = export_here(replace(request, options={"opset": 13}), tmp_path, count_work=False)
    assert at_13.path == at_18.path and at_13.path.name == "rethined_onnx-fp32_1024x1024.onnx"
    assert at_13.manifest["form"] == {"upscale_form": "compact"} and at_13.manifest["graph"]["ops"]["NonZero"] == 2
    assert at_18.manifest["onnx"]["opset"] == 18 and at_13.manifest["onnx"]["opset"] == 13
    assert Artifact.load(at_13.path).manifest["onnx"]["opset"] == 13  # on disk too
    assert at_13.manifest["parity"]["max_abs_error"] < 1e-4


def test_an_intact_artifact_is_reused_and_a_corrupted_one_is_detected(onnx_artifact):
    again = export_here(ExportRequest("rethined", 1024, 1024, "onnx"), onnx_artifact.path.parent)
    assert again.manifest["exported_at"] == onnx_artifact.manifest["exported_at"]
    corrupted = onnx_artifact.path.with_name("corrupted.onnx")
    corrupted.write_bytes(onnx_artifact.path.read_bytes()[:-10])
    corrupted.with_name("corrupted.onnx.json").write_text(onnx_artifact.manifest_path.read_text())
    with pytest.raises(RbenchError, match="sha256"):
        Artifact.load(corrupted)


def test_a_corrupted_artifact_is_exported_again_not_reused(tmp_path):
    request = ExportRequest("rethined", 512, 512, "onnx", variant="top1")
    first = export_here(request, tmp_path, count_work=False)
    first.path.write_bytes(first.path.read_bytes()[:-10])
    again = export_here(request, tmp_path, count_work=False)
    assert Artifact.load(again.path).sha256 == first.sha256  # intact again, and the same deterministic graph
    assert again.manifest["parity"]["status"] == "ok"


def test_unknown_target_is_a_user_error():
    with pytest.raises(UnknownNameError, match="unknown target 'tflite'"):
        create_exporter("tflite")


def test_artifact_weights_do_not_grow_with_resolution(onnx_artifact, tmp_path):
    """Only the resolution-independent weights may be stored: no H×W constant folded in (e.g. a blur normaliser)."""
    larger = export_here(ExportRequest("rethined", 2048, 2048, "onnx", variant="top1"), tmp_path, count_work=False)
    assert larger.manifest["onnx"]["initializer_bytes"] < onnx_artifact.manifest["onnx"]["initializer_bytes"] * 1.01


@pytest.mark.parametrize("opset", [18, 13])
def test_fp16_onnx_holds_float16_weights_keeps_float32_io_and_passes_fp16_parity(tmp_path, opset):
    """--precision fp16 for ONNX (the CUDA EP's fp16): weights and activations in float16, the same float32 inputs
    and output as fp32, parity within the fp16 tolerance on ONNX Runtime here. The fp32 file of the same cell is a
    different artifact. Both exporters' graphs convert (TorchScript's shares Resize scales between consumers)."""
    request = ExportRequest("rethined", 512, 512, "onnx", precision="fp16", variant="top1", options={"opset": opset})
    half = export_here(request, tmp_path, count_work=False)
    full = export_here(replace(request, precision="fp32"), tmp_path, count_work=False)
    assert half.path.name == "rethined-top1_onnx-fp16_512x512.onnx" and half.sha256 != full.sha256
    weights = half.manifest["graph"]["weight_bytes"]
    assert weights.get("float16", 0) > 0.9 * sum(weights.values())
    assert half.manifest["onnx"]["fp16"]["keep_io_types"] is True
    graph = onnx.load(str(half.path))
    float32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in graph.graph.input] == [float32, float32]
    assert graph.graph.output[0].type.tensor_type.elem_type == float32
    parity = half.manifest["parity"]
    assert parity["status"] == "ok" and parity["atol"] == 2e-2
    assert 1e-5 < parity["max_abs_error"] < 2e-2  # really half precision, and still close


def test_tensorrt_target_keeps_fp32_onnx_at_fp16_and_says_it_is_a_build_flag(tmp_path):
    """At 1024, so the upscaler's static form (what TensorRT 8.2 gets: opset 13, no data-dependent shapes) runs."""
    artifact = export_here(ExportRequest("rethined", 1024, 1024, "tensorrt", precision="fp16", variant="dense",
                                         options={"opset": 13, "tensorrt": "8.2"}), tmp_path, count_work=False)
    assert artifact.manifest["form"] == {} and "NonZero" not in artifact.manifest["graph"]["ops"]
    assert artifact.manifest["parity"]["max_abs_error"] < 1e-4  # the fp32 ONNX behind the engine, on ORT here
    assert "fp16" not in artifact.manifest["onnx"]
    assert "float16" not in artifact.manifest["graph"]["weight_bytes"]
    assert artifact.manifest["tensorrt"]["build_flags"] == ["--fp16"]
