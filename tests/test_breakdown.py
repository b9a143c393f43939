"""Time per module stage from ORT's profiler: the scope map from the dynamo export, and the profile attribution."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from exporters.onnx import export_onnx, simplify_in_place
from rethined_bench.measure.breakdown import OTHER, attribute, module_paths, stage_map
from rethined_bench.runners.ort import profile_stages

STAGES = {"encoder": ["encoder"], "head": ["head"]}


class TwoStage(nn.Module):
    """image, mask → image: a conv encoder and a per-pixel linear head (a MatMul + Add that onnxsim may fuse)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                     nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        features = self.encoder(torch.cat([image * (1 - mask), mask], dim=1))
        return self.head(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * mask + image


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("breakdown") / "two_stage.onnx"
    export_onnx(TwoStage().eval(), path, 64, 64, simplify=False)
    unsimplified = onnx.load(str(path))
    simplify_in_place(path)
    return path, unsimplified, onnx.load(str(path))


def test_module_paths_come_from_the_dynamo_metadata(exported):
    _, unsimplified, _ = exported
    paths = module_paths(unsimplified)
    convs = [n for n in unsimplified.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2
    assert [paths[n.name] for n in convs] == [("encoder", "encoder.0"), ("encoder", "encoder.2")]
    assert paths[convs[0].output[0]] == ("encoder", "encoder.0")  # values map too (NCHWc kernels use them)


def test_stage_map_covers_every_executed_node(exported):
    _, unsimplified, simplified = exported
    stages = stage_map(module_paths(unsimplified), STAGES, run=simplified)
    assert {stages[n.name] for n in simplified.graph.node if n.op_type == "Conv"} == {"encoder"}
    assert {stages[n.name] for n in simplified.graph.node if n.op_type in ("MatMul", "Gemm")} == {"head"}
    assert all(n.name in stages for n in simplified.graph.node)
    assert stages[next(n.name for n in simplified.graph.node if n.op_type == "Concat")] == OTHER


def test_stage_names_match_whole_module_components_first_label_first():
    paths = {"a": ("wrapped", "wrapped.generator", "wrapped.generator.encoder_decoder",
                   "wrapped.generator.encoder_decoder.0"),
             "b": ("wrapped", "wrapped.generator", "wrapped.generator.attention"),
             "c": ("wrapped", "wrapped.generator_head"), "d": ()}
    stages = stage_map(paths, {"coarse": ["generator.encoder_decoder"], "attention": ["generator"]})
    assert stages == {"a": "coarse", "b": "attention", "c": OTHER, "d": OTHER}


def _kernel(name: str, ts: int, dur: int) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {}}


def _run(ts: int, dur: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def test_attribute_resolves_the_names_ort_derives():
    # names as ORT 1.31 writes them for a dynamo export: a plain node, an NCHWc conv named after its output
    # value, a fusion named after its first node, layout reorders it inserts, and an unfused node
    stage_of = {"node_cat": OTHER, "relu_3": "encoder", "node_select_1": "encoder", "node_matmul_7": "head",
                "node_mul_2": "head"}
    warmup = [_run(0, 100), _kernel("node_cat", 1, 50)]
    run = [_kernel("node_cat", 1000, 10), _kernel("ReorderInput_token_4", 1010, 30), _kernel("relu_3_nchwc", 1040, 400),
           _kernel("ReorderOutput_token_9", 1440, 20), _kernel("node_select_1/GatherSliceToSplitFusion", 1460, 40),
           _kernel("node_matmul_7/MatmulTransposeFusion/", 1500, 200), _kernel("node_mul_2", 1700, 100)]
    times = attribute([*warmup, _run(990, 900), *run, _run(2000, 900),
                       *({**e, "ts": e["ts"] + 1010} for e in run)], stage_of)
    assert times.runs == 2  # the warm-up run is skipped, with its kernel
    # ms per inference; reorders are charged to the kernel before them (ReorderInput: other, ReorderOutput: encoder)
    assert times.ms == pytest.approx({OTHER: 0.040, "encoder": 0.460, "head": 0.300})
    assert times.inserted_ms == pytest.approx(0.050)
    assert times.run_ms == pytest.approx(0.900)
    assert times.unresolved == ["ReorderInput_token_4", "ReorderOutput_token_9"]
    assert times.shares()["encoder"] == pytest.approx(0.460 / 0.800)


def test_attribute_needs_a_profiled_run_after_the_warm_up():
    with pytest.raises(ValueError, match="no model_run"):
        attribute([_run(0, 10), _kernel("node_cat", 1, 5)], {"node_cat": OTHER})


def test_profile_of_a_real_session_attributes_every_exported_kernel(exported, tmp_path):
    from rethined_bench.inputs import make_inputs

    path, unsimplified, simplified = exported
    image, mask = make_inputs(64, 64)
    stages = stage_map(module_paths(unsimplified), STAGES, run=simplified)
    times = profile_stages(path, {"image": image.numpy(), "mask": mask.numpy()}, stages, threads=1, runs=2,
                           workdir=tmp_path)
    assert times.runs == 2
    assert {"encoder", "head"} <= set(times.ms) and times.ms["encoder"] > 0 and times.ms["head"] > 0
    # only nodes ORT inserted itself may go unresolved; every kernel that came from the export has its stage
    assert all(not name.startswith("node_") for name in times.unresolved), times.unresolved
    assert times.kernel_ms <= times.run_ms
    assert not list(tmp_path.glob("*.json"))  # the profile file is removed
