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
from rethined_bench.measure.stats import summarize
from rethined_bench.runners.local import CellError
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
    pairs, unmatched = gate.match_artifacts(tmp_path / "base", tmp_path / "head")
    assert [(p.label, p.baseline.path.name, p.candidate.path.name) for p in pairs] == [
        ("tiny/dense 64x64 onnx-fp32", "x64.onnx", "renamed64.onnx")]
    assert [a.path.name for a in unmatched] == ["x32.onnx"]  # its candidate is another model's: missing


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


# --- failed and missing candidates ---------------------------------------------------------------------------------

def crashing(medians: dict[str, list[float]], crash: str):
    """``fake_measure``, except that measuring ``crash`` fails as a dead worker does."""
    measure = fake_measure(medians)

    def run(artifact, protocol):
        if artifact.path.name == crash:
            raise CellError("worker exited with -11: Segmentation fault")
        return measure(artifact, protocol)
    return run


def test_a_crashing_candidate_fails_the_gate(tmp_path):
    tiny_artifact(tmp_path / "base", "a", 32)
    tiny_artifact(tmp_path / "head", "b", 32)
    comparisons, diffs = gate.ab_check(tmp_path / "base", tmp_path / "head", CONFIG, 6, PROTOCOL,
                                       crashing({"a.onnx": BASE}, "b.onnx"))
    [comparison] = comparisons
    assert comparison.verdict == "failed" and "Segmentation fault" in comparison.note
    assert comparison.ratio is None and comparison.candidate_median is None
    assert gate.failed(comparisons, diffs)
    relaxed = gate.GateConfig(allow_missing=True)  # --allow-missing never excuses a crash
    comparisons, _ = gate.ab_check(tmp_path / "base", tmp_path / "head", relaxed, 6, PROTOCOL,
                                   crashing({"a.onnx": BASE}, "b.onnx"))
    assert comparisons[0].verdict == "failed"


def test_a_crashing_baseline_is_a_user_error(tmp_path):
    tiny_artifact(tmp_path / "base", "a", 32)
    tiny_artifact(tmp_path / "head", "b", 32)
    with pytest.raises(RbenchError, match="the baseline a.onnx cannot be measured"):
        gate.ab_check(tmp_path / "base", tmp_path / "head", CONFIG, 6, PROTOCOL, crashing({"b.onnx": BASE}, "a.onnx"))


def test_a_baseline_cell_missing_from_the_candidate_fails_unless_allowed(tmp_path):
    tiny_artifact(tmp_path / "base", "a32", 32)
    tiny_artifact(tmp_path / "base", "a64", 64)
    tiny_artifact(tmp_path / "head", "b32", 32)
    measure = {"a32.onnx": BASE * 2, "b32.onnx": BASE * 2}
    comparisons, diffs = gate.ab_check(tmp_path / "base", tmp_path / "head", CONFIG, 6, PROTOCOL,
                                       fake_measure(measure))
    verdicts = {c.cell: (c.verdict, c.note) for c in comparisons}
    assert verdicts["tiny/dense 64x64 onnx-fp32"] == ("missing", f"no candidate artifact in {tmp_path / 'head'}")
    assert verdicts["tiny/dense 32x32 onnx-fp32"][0] == "pass" and gate.failed(comparisons, diffs)
    comparisons, diffs = gate.ab_check(tmp_path / "base", tmp_path / "head", gate.GateConfig(allow_missing=True),
                                       6, PROTOCOL, fake_measure(measure))
    assert sorted(c.verdict for c in comparisons) == ["pass", "warning"] and not gate.failed(comparisons, diffs)
    data = gate.summary("ab", comparisons, diffs, CONFIG, None)
    assert "allowed by --allow-missing" in gate.markdown_summary(data)
    json.dumps(data, allow_nan=False)  # no NaN for the missing side: valid JSON for CI tools


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


def _placed(result: Result, npu: int, cpu: int) -> Result:
    """``result`` as a hosted device reports it: layers per compute unit (runners/aihub_profile.Placement)."""
    units = {"NPU": npu, "GPU": 0, "CPU": cpu, "UNSPECIFIED": 0}
    result.environment = {"device_reported": {"placement": {
        "units": {unit: {"layers": n, "time_ms": 0.1 * n} for unit, n in units.items()},
        "layer_count": npu + cpu, "primary_unit": "NPU"}}}
    return result


def test_stored_mode_fails_when_layers_fall_off_the_npu_even_at_equal_latency(tmp_path):
    """AI Hub's op placement is compared exactly: 3 layers moving to the CPU fail the gate with no timing noise."""
    baseline, db = _stored(tmp_path, _placed(_result(10.0, 0.02), 340, 0), _placed(_result(9.9, 0.02), 337, 3))
    comparisons, diffs = gate.stored_check(baseline, db, "host-cpu", CONFIG)
    assert [c.verdict for c in comparisons] == ["pass"]
    assert [d.describe() for d in diffs if d.failed] == ["layers on CPU: 0 → 3"]
    assert gate.failed(comparisons, diffs)
    same, db = _stored(tmp_path / "same", _placed(_result(10.0, 0.02), 340, 0), _placed(_result(10.0, 0.02), 340, 0))
    assert gate.stored_check(same, db, "host-cpu", CONFIG)[1] == []


def _stored_many(tmp_path: Path, baseline: list[Result], current: list[Result]) -> tuple[Path, Path]:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"schema": "rbench-results/1", "device": "host-cpu",
                                "results": list(iter_public(baseline))}))
    db = tmp_path / "rbench.sqlite"
    for result in current:
        ResultStore(db).add(result)
    return path, db


def _cell(result: Result, height: int) -> Result:
    result.height = result.width = height
    return result


def test_stored_mode_fails_on_a_failed_or_missing_candidate(tmp_path):
    failed = Result("host-cpu", "local-ort", "tiny", "dense", 64, 64, "onnx", "fp32", "failed",
                    reason="measure: worker exited with -9: Killed")
    unsupported = Result("host-cpu", "local-ort", "tiny", "dense", 128, 128, "onnx", "fp32", "unsupported",
                         reason="the model cannot go there")
    baseline, db = _stored_many(tmp_path, [_cell(_result(10.0, 0.02), h) for h in (32, 64, 128, 256)],
                                [_result(10.0, 0.02), failed, unsupported])
    comparisons, diffs = gate.stored_check(baseline, db, "host-cpu", CONFIG)
    verdicts = {c.cell.split()[1]: (c.verdict, c.note) for c in comparisons}
    assert verdicts["32x32"][0] == "pass"
    assert verdicts["64x64"] == ("failed", "candidate failed: measure: worker exited with -9: Killed")
    assert verdicts["128x128"] == ("missing", "the candidate is unsupported: the model cannot go there")
    assert verdicts["256x256"] == ("missing", f"no result for this cell in {db}")
    assert gate.failed(comparisons, diffs)
    comparisons, diffs = gate.stored_check(baseline, db, "host-cpu", gate.GateConfig(allow_missing=True))
    assert sorted(c.verdict for c in comparisons) == ["failed", "pass", "warning", "warning"]
    assert gate.failed(comparisons, diffs)  # the failed candidate still fails


def test_stored_mode_reads_the_noise_of_an_exported_baseline(tmp_path):
    """``rbench report --format json`` exports the process medians, so a baseline whose processes spread 20% does
    not cry wolf at a 15% slowdown (its CV alone, 2%, would)."""
    stats = summarize([[100.0, 101.0, 100.0], [120.0, 121.0, 120.0], [110.0, 111.0, 110.0]])
    baseline = _result(stats.median, 0.02)
    baseline.latency = stats.to_dict() | {"cv": 0.02}
    public = next(iter_public([baseline]))
    assert public["latency_ms"]["process_medians"] == [100.0, 120.0, 110.0]
    path, db = _stored(tmp_path, baseline, _result(stats.median * 1.15, 0.02))
    [comparison], _ = gate.stored_check(path, db, "host-cpu", CONFIG)
    assert comparison.verdict == "warning" and comparison.band == pytest.approx(20 / 110)


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


def test_cli_exit_codes_in_stored_mode_pass_and_failed_candidate(tmp_path):
    passing, db = _stored(tmp_path / "p", _result(10.0, 0.02), _result(10.2, 0.02))
    assert rbench("--baseline-results", str(passing), "--db", str(db), cwd=tmp_path).returncode == 0
    crashed = Result("host-cpu", "local-ort", "tiny", "dense", 32, 32, "onnx", "fp32", "failed",
                     reason="export: parity failed")
    broken, db = _stored(tmp_path / "f", _result(10.0, 0.02), crashed)
    done = rbench("--baseline-results", str(broken), "--db", str(db), "--allow-missing", "--summary-json", "s.json",
                  cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    [cell] = json.loads((tmp_path / "s.json").read_text())["cells"]
    assert cell["verdict"] == "failed" and cell["note"] == "candidate failed: export: parity failed"


def _ab(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """A/B through the CLI with real workers; 2 processes per side cannot reach alpha, so timing never fails."""
    return rbench("--baseline", "base", "--candidate", "head", "--processes", "2", "--warmup", "0", "--min-iters",
                  "2", "--min-time", "0", "--summary-json", "s.json", *args, cwd=tmp_path)


def test_cli_exits_1_on_a_structural_only_regression(tmp_path):
    tiny_artifact(tmp_path / "base", "a", 32)
    tiny_artifact(tmp_path / "head", "b", 32, extra_identity=True)
    done = _ab(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [c["verdict"] for c in summary["cells"]] == ["pass"]
    assert {(d["metric"], d["failed"]) for d in summary["structural"]} >= {("Identity", True), ("nodes", True)}


def test_cli_exits_1_on_a_missing_candidate_cell_unless_allowed(tmp_path):
    tiny_artifact(tmp_path / "base", "a32", 32)
    tiny_artifact(tmp_path / "base", "a64", 64)
    tiny_artifact(tmp_path / "head", "b32", 32)
    done = _ab(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    verdicts = {c["cell"]: c["verdict"] for c in json.loads((tmp_path / "s.json").read_text())["cells"]}
    assert verdicts == {"tiny/dense 32x32 onnx-fp32": "pass", "tiny/dense 64x64 onnx-fp32": "missing"}
    assert _ab(tmp_path, "--allow-missing").returncode == 0


def test_cli_calibration_exits_0_and_writes_the_band(tmp_path):
    artifact = tiny_artifact(tmp_path, "a", 32)
    done = rbench("--calibrate", str(artifact.path), "--calibration", "cal.json", "--processes", "2", "--warmup",
                  "0", "--min-iters", "2", "--min-time", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "cal.json").read_text())["resolvable"] >= 0


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
