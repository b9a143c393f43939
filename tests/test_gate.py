"""The regression gate: decision logic on synthetic process medians, exact mode, matching, stored mode, CLI exits.

Timings are injected (``measure=``) everywhere except one tiny real A/A run through the CLI, so no assertion here
depends on how fast this machine is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from exporters.onnx import graph_statistics, onnx_graph
from rethined_bench.artifact import Artifact, manifest_path_for, sha256_of, size_of
from rethined_bench import gate
from rethined_bench.errors import RbenchError
from rethined_bench.measure.protocol import Protocol
from rethined_bench.store import Result, ResultStore, iter_public

BASE = [100.0, 102.0, 98.0, 101.0, 99.0, 103.0]
CONFIG = gate.GateConfig()


def scaled(values: list[float], factor: float) -> list[float]:
    return [v * factor for v in values]


def tiny_artifact(directory: Path, name: str, size: int = 32, extra_identity: bool = False,
                  model: str = "tiny") -> Artifact:
    """A minimal inpainting-shaped ONNX graph (image·(1-mask) + mask·0.5) with a manifest like exporters write."""
    directory.mkdir(parents=True, exist_ok=True)
    nodes = [helper.make_node("Sub", ["one", "mask"], ["keep"]), helper.make_node("Mul", ["image", "keep"], ["kept"]),
             helper.make_node("Mul", ["mask", "half"], ["fill"]),
             helper.make_node("Add", ["kept", "fill"], ["pre" if extra_identity else "inpainted"])]
    if extra_identity:
        nodes.append(helper.make_node("Identity", ["pre"], ["inpainted"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, size, size])],
        [helper.make_tensor_value_info("inpainted", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]), helper.make_tensor("half", TensorProto.FLOAT, [1],
                                                                                       [0.5])])
    path = directory / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    manifest = {"name": name, "file": path.name, "model": model, "variant": "dense", "target": "onnx",
                "precision": "fp32", "resolution": [size, size], "sha256": sha256_of(path),
                "size_bytes": size_of(path), "work": {"params": 2, "fvcore_gmacs": 0.001},
                "onnx": graph_statistics(path), "graph": onnx_graph(path)}
    manifest_path_for(path).write_text(json.dumps(manifest))
    return Artifact.load(path)


def fake_measure(medians: dict[str, list[float]]):
    """A measure function that returns each artifact's next synthetic process median (by file name)."""
    queues = {name: list(values) for name, values in medians.items()}
    return lambda artifact, protocol: queues[artifact.path.name].pop(0)


PROTOCOL = Protocol(processes=1)


# --- decision logic -----------------------------------------------------------------------------------------------

def test_identical_distributions_pass():
    result = gate.decide("cell", BASE, list(BASE), CONFIG)
    assert result.verdict == "pass" and result.p_slower > CONFIG.alpha and result.ratio == pytest.approx(1.0)


def test_shift_of_25_percent_with_six_processes_is_a_regression():
    result = gate.decide("cell", BASE, scaled(BASE, 1.25), CONFIG)
    assert result.verdict == "regression"
    assert result.p_slower < CONFIG.alpha and result.ci[0] > 1.1


def test_three_processes_per_side_cannot_reach_alpha():
    result = gate.decide("cell", BASE[:3], scaled(BASE[:3], 1.25), CONFIG)
    assert result.p_slower >= 0.05 and result.verdict == "pass"


def test_significant_shift_below_threshold_passes():
    result = gate.decide("cell", BASE, scaled(BASE, 1.06), CONFIG)
    assert result.p_slower < CONFIG.alpha and result.verdict == "pass"


def test_faster_candidate_is_an_improvement():
    assert gate.decide("cell", BASE, scaled(BASE, 0.7), CONFIG).verdict == "improvement"


def test_regression_within_calibrated_resolution_is_a_warning():
    warned = gate.decide("cell", BASE, scaled(BASE, 1.25), CONFIG, resolvable=0.30)
    assert warned.verdict == "warning"
    assert "cannot resolve 10% on this runner (A/A p99 = 30.0%)" in warned.note
    assert gate.decide("cell", BASE, scaled(BASE, 1.25), CONFIG, resolvable=0.15).verdict == "regression"


def test_resolvable_slowdown_grows_with_noise():
    quiet = gate.self_resolvable(BASE, seed=0)
    noisy = gate.self_resolvable([70.0, 130.0, 100.0, 90.0, 120.0, 80.0], seed=0)
    assert 0 < quiet < 0.05 < noisy


def test_decide_needs_two_processes_per_side():
    with pytest.raises(RbenchError):
        gate.decide("cell", [1.0], [1.0, 2.0], CONFIG)


# --- confirm ------------------------------------------------------------------------------------------------------

def _pair(tmp_path: Path) -> gate.Pair:
    return gate.Pair("cell", tiny_artifact(tmp_path / "a", "a"), tiny_artifact(tmp_path / "b", "b"))


def test_confirm_clears_a_one_off(tmp_path):
    measure = fake_measure({"a.onnx": BASE + BASE, "b.onnx": scaled(BASE, 1.3) + list(BASE)})
    result = gate.compare_pair(_pair(tmp_path), CONFIG, 6, PROTOCOL, measure, resolvable=0.0)
    assert result.verdict == "warning" and "did not reproduce" in result.note


def test_confirm_keeps_a_reproduced_regression(tmp_path):
    measure = fake_measure({"a.onnx": BASE + BASE, "b.onnx": scaled(BASE, 1.3) + scaled(BASE, 1.28)})
    result = gate.compare_pair(_pair(tmp_path), CONFIG, 6, PROTOCOL, measure, resolvable=0.0)
    assert result.verdict == "regression" and result.note.startswith("confirmed")


def test_interleaving_alternates_sides(tmp_path):
    order = []
    pair = _pair(tmp_path)
    gate.interleave(pair.baseline, pair.candidate, 3, PROTOCOL, lambda a, p: order.append(a.path.name) or 1.0)
    assert order == ["a.onnx", "b.onnx"] * 3


def test_saved_calibration_downgrades_an_unresolvable_regression(tmp_path):
    artifact = tiny_artifact(tmp_path / "a", "a")
    noisy_aa = [70.0, 130.0, 100.0, 90.0, 120.0, 80.0, 125.0, 75.0, 110.0, 95.0, 85.0, 115.0]
    saved = gate.run_calibration(artifact.path, 6, PROTOCOL, tmp_path / "calibration.json", 0,
                                 fake_measure({"a.onnx": noisy_aa}))
    loaded = gate.Calibration.load(tmp_path / "calibration.json")
    assert loaded.resolvable == saved.resolvable > 0.25
    tiny_artifact(tmp_path / "b", "b")
    measure = fake_measure({"a.onnx": BASE, "b.onnx": scaled(BASE, 1.2)})
    comparisons, _ = gate.ab_check(tmp_path / "a", tmp_path / "b", CONFIG, 6, PROTOCOL, measure, calibration=loaded)
    assert comparisons[0].verdict == "warning" and comparisons[0].band == loaded.resolvable


def test_missing_calibration_file_is_a_user_error(tmp_path):
    with pytest.raises(RbenchError, match="no calibration file"):
        gate.Calibration.load(tmp_path / "missing.json")


# --- exact mode ---------------------------------------------------------------------------------------------------

FACTS = {"params": 1000.0, "fvcore GMACs": 2.5, "size bytes": 4000.0, "nodes": 20.0, "Transpose": 8.0, "Conv": 12.0}


def test_one_more_op_fails_with_a_readable_diff():
    diffs = gate.structural_diffs("cell", FACTS, FACTS | {"Transpose": 9.0, "nodes": 21.0}, 0.0)
    assert {d.describe() for d in diffs if d.failed} == {"Transpose: 8 → 9", "nodes: 20 → 21"}


def test_new_op_type_fails():
    diffs = gate.structural_diffs("cell", FACTS, FACTS | {"Identity": 1.0, "nodes": 21.0}, 0.0)
    assert any(d.metric == "Identity" and d.failed for d in diffs)


def test_size_increase_fails_and_equal_passes():
    assert [d.metric for d in gate.structural_diffs("c", FACTS, FACTS | {"size bytes": 4001.0}, 0.0)] == ["size bytes"]
    assert gate.structural_diffs("c", FACTS, dict(FACTS), 0.0) == []


def test_structural_threshold_is_honoured_and_decreases_pass():
    bigger = FACTS | {"size bytes": 4200.0, "params": 900.0}
    assert not any(d.failed for d in gate.structural_diffs("c", FACTS, bigger, 0.10))
    assert [d.metric for d in gate.structural_diffs("c", FACTS, bigger, 0.01) if d.failed] == ["size bytes"]


def test_facts_only_compared_where_both_sides_have_them():
    assert gate.structural_diffs("c", {"params": 1.0}, {"params": 1.0, "nodes": 5.0, "Conv": 5.0}, 0.0) == []


def test_structural_facts_from_manifest_and_record(tmp_path):
    facts = gate.structural_facts(tiny_artifact(tmp_path, "a").manifest)
    assert facts["params"] == 2 and facts["nodes"] == 4 and facts["Mul"] == 2 and facts["size bytes"] > 0
    assert gate.structural_facts({"params": 7, "fvcore_gmacs": 1.5}) == {"params": 7.0, "fvcore GMACs": 1.5}


# --- matching -----------------------------------------------------------------------------------------------------

def test_directories_are_matched_by_manifest_cell(tmp_path):
    tiny_artifact(tmp_path / "base", "x32", 32)
    tiny_artifact(tmp_path / "base", "x64", 64)
    tiny_artifact(tmp_path / "head", "renamed64", 64)
    tiny_artifact(tmp_path / "head", "other", 32, model="other")
    pairs = gate.match_artifacts(tmp_path / "base", tmp_path / "head")
    assert [(p.label, p.baseline.path.name, p.candidate.path.name) for p in pairs] == [
        ("tiny/dense 64x64 onnx-fp32", "x64.onnx", "renamed64.onnx")]


def test_no_common_cell_or_duplicate_cell_is_a_user_error(tmp_path):
    tiny_artifact(tmp_path / "base", "x32", 32)
    tiny_artifact(tmp_path / "head", "x64", 64)
    with pytest.raises(RbenchError, match="no cell"):
        gate.match_artifacts(tmp_path / "base", tmp_path / "head")
    tiny_artifact(tmp_path / "base", "copy32", 32)
    with pytest.raises(RbenchError, match="two artifacts"):
        gate.load_artifacts(tmp_path / "base")


def test_ab_check_with_injected_timings(tmp_path):
    tiny_artifact(tmp_path / "base", "a", 32)
    tiny_artifact(tmp_path / "head", "b", 32, extra_identity=True)
    measure = fake_measure({"a.onnx": BASE, "b.onnx": scaled(BASE, 1.01)})
    comparisons, diffs = gate.ab_check(tmp_path / "base", tmp_path / "head", CONFIG, 6, PROTOCOL, measure)
    assert [c.verdict for c in comparisons] == ["pass"]
    assert {d.describe() for d in diffs if d.failed} >= {"Identity: 0 → 1", "nodes: 4 → 5"}
    assert gate.failed(comparisons, diffs)


# --- stored mode --------------------------------------------------------------------------------------------------

def _result(median: float, cv: float, params: int = 100) -> Result:
    return Result("host-cpu", "local-ort", "tiny", "dense", 32, 32, "onnx", "fp32", "ok",
                  latency={"median": median, "cv": cv, "n": 30, "processes": 3, "median_of_process_medians": median},
                  work={"params": params, "fvcore_gmacs": 0.5})


def _stored(tmp_path: Path, baseline: Result, current: Result) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"schema": "rbench-results/1", "device": "host-cpu",
                                "results": list(iter_public([baseline]))}))
    db = tmp_path / "rbench.sqlite"
    ResultStore(db).add(current)
    return path, db


@pytest.mark.parametrize("baseline_cv, factor, verdict", [
    (0.02, 1.30, "regression"),  # beyond 10% and beyond 2 × CV
    (0.10, 1.15, "warning"),  # beyond 10% but within the baseline's noise (2 × CV = 20%)
    (0.02, 1.05, "pass"),
    (0.02, 0.80, "improvement"),
])
def test_stored_mode_rule(tmp_path, baseline_cv, factor, verdict):
    baseline, db = _stored(tmp_path, _result(10.0, baseline_cv), _result(10.0 * factor, 0.02))
    comparisons, diffs = gate.stored_check(baseline, db, "host-cpu", CONFIG)
    assert [c.verdict for c in comparisons] == [verdict] and diffs == []


def test_stored_mode_compares_params_exactly(tmp_path):
    baseline, db = _stored(tmp_path, _result(10.0, 0.02), _result(10.0, 0.02, params=101))
    _, diffs = gate.stored_check(baseline, db, "host-cpu", CONFIG)
    assert [d.describe() for d in diffs if d.failed] == ["params: 100 → 101"]


def test_baseline_noise_uses_process_medians_when_recorded():
    assert gate.baseline_noise({"median": 10.0, "cv": 0.01, "process_medians": [9.0, 10.0, 12.0]}) == pytest.approx(0.3)


# --- CLI ----------------------------------------------------------------------------------------------------------

def rbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rethined_bench.cli", "check", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)  # hang guard only


def test_cli_exit_codes_in_stored_mode(tmp_path):
    regressed, db = _stored(tmp_path / "r", _result(10.0, 0.02), _result(13.0, 0.02))
    done = rbench("--baseline-results", str(regressed), "--db", str(db), "--summary-json", "s.json",
                  "--summary-markdown", "s.md", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["passed"] is False and summary["cells"][0]["verdict"] == "regression"
    assert summary["cells"][0]["p_slower"] is None  # stored mode has one number per side: no test, no NaN
    assert "FAILED" in (tmp_path / "s.md").read_text()

    missing = rbench("--baseline-results", str(tmp_path / "nope.json"), "--db", str(db), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: no baseline results file")


def test_check_without_a_mode_is_a_user_error(tmp_path):
    with pytest.raises(RbenchError, match="give --baseline and --candidate"):
        gate.check(baseline=tmp_path / "x.onnx")


def test_cli_real_tiny_a_a_check(tmp_path):
    """End to end through real worker processes (exit 0 on pass). With 2 processes per side the smallest one-sided
    Mann-Whitney p is 1/6, so the timing verdict cannot fail whatever the machine does; this checks the plumbing."""
    artifact = tiny_artifact(tmp_path, "a", 32)
    done = rbench("--baseline", str(artifact.path), "--candidate", str(artifact.path), "--processes", "2",
                  "--warmup", "0", "--min-iters", "3", "--min-time", "0", "--summary-json", "s.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    cell = json.loads((tmp_path / "s.json").read_text())["cells"][0]
    assert cell["verdict"] == "pass" and len(cell["baseline_ms"]) == len(cell["candidate_ms"]) == 2
    assert all(np.isfinite(cell["baseline_ms"]))
