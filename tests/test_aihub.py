"""The Snapdragon 888 through Qualcomm AI Hub, against the real qai-hub client with only its REST functions faked
(``fake_aihub``): compile and profile jobs, statistics from the samples, op placement, parity, resume without
duplicate jobs, failures and deadlines, and a token that appears nowhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("qai_hub", reason="the qai-hub client (extra `qnn`) is not installed")

from fake_aihub import fake_hub_fixture  # noqa: E402,F401  (the fake_hub fixture)

from rethined_bench.devices import get_profile  # noqa: E402
from rethined_bench.measure.protocol import Protocol  # noqa: E402
from rethined_bench.runners.aihub import compile_failure_status, job_state  # noqa: E402
from rethined_bench.store import ResultStore  # noqa: E402
from rethined_bench.sweep import Cell, Sweep  # noqa: E402

TOKEN = "rbench-test-token-7f3a9c1e5b"  # what a leak scan looks for
CELL = Cell("rethined", "top1", 512)
REFUSED_GATHER = ("Failed to compile: op type Gather (/coarse/Gather) is not supported by the QNN HTP backend "
                  "for this device")


@pytest.fixture
def s888(fake_hub, monkeypatch):
    """The snapdragon-888 profile pointed at the fake service, with the token in the environment (as a user's CI
    would) and instant polling."""
    monkeypatch.setenv("QAI_HUB_API_TOKEN", TOKEN)
    monkeypatch.setenv("RBENCH_SNAPDRAGON_888_POLL_INTERVAL_S", "0")
    return get_profile("snapdragon-888")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


def sweep(profile, tmp_path, artifacts, **protocol) -> Sweep:
    return Sweep(profile, ResultStore(tmp_path / "r.sqlite"),
                 Protocol(**({"processes": 2, "min_iters": 5, "min_time_s": 0.0} | protocol)), artifacts)


def test_a_cell_is_compiled_profiled_and_stored_with_placement_and_parity(s888, fake_hub, tmp_path, artifacts):
    [outcome] = sweep(s888, tmp_path, artifacts).run_jobs([CELL])
    assert outcome.status == "ok", outcome.detail
    result = outcome.result
    assert [len(s) for s in result.samples] == [5, 5]  # --max_profiler_iterations = the protocol's min_iters
    assert result.latency["median"] == pytest.approx(4.2, rel=0.05)  # all_inference_times (µs) in ms
    assert result.load["cold"] > 0 and result.load["warm"] > 0 and result.peak_memory_mb > 0
    assert result.compile_ms is None  # the service compiles; rbench timed nothing
    device = result.environment["device_reported"]
    assert device["placement"]["primary_unit"] == "NPU" and device["placement"]["units"]["NPU"]["layers"] > 0
    assert device["parity"]["status"] == "ok" and device["parity"]["max_abs_error"] < 1e-4
    assert "shared, hosted phones" in device["hosted"] and len(device["estimated_inference_ms"]) == 2
    receipt = result.receipt["measure"]
    assert receipt["device"] == "Samsung Galaxy S21" and receipt["detail_version"] == "1.8"
    assert len(receipt["profile_jobs"]) == 2 and receipt["compile_job"] in fake_hub.jobs("compile")
    assert any("2.42" in version for version in receipt["tool_versions"].values())
    assert "--qairt_version 2.42" in receipt["options"] and "--max_profiler_iterations 5" in receipt["options"]
    compile_options = next(iter(fake_hub.jobs("compile").values()))["options"]
    assert "--target_runtime qnn_dlc" in compile_options and "--quantize_full_type float16" in compile_options
    calls = fake_hub.calls()
    assert (calls["create_compile_job"], calls["create_inference_job"]) == (1, 2)

    again = sweep(s888, tmp_path, artifacts)
    assert again.run_jobs([CELL])[0].status == "skipped"
    assert Sweep(s888, again.store, again.protocol, artifacts, force=True).run_jobs([CELL])[0].status == "ok"
    calls = fake_hub.calls()
    assert (calls["create_compile_job"], calls["create_inference_job"]) == (1, 4)  # the compiled model reused


def test_a_detached_run_is_collected_by_the_next_without_a_second_submission(s888, fake_hub, tmp_path, artifacts):
    first = sweep(s888, tmp_path, artifacts)
    [submitted] = first.run_jobs([CELL], detach=True)
    assert submitted.status == "submitted", submitted.detail
    assert first.store.pending("snapdragon-888") == 1
    jobs = dict(fake_hub.calls())
    [collected] = sweep(s888, tmp_path, artifacts).run_jobs([CELL])  # a new process would do the same
    assert collected.status == "ok", collected.detail
    calls = fake_hub.calls()
    assert (calls["create_compile_job"], calls["create_inference_job"]) == (
        jobs["create_compile_job"], jobs["create_inference_job"])
    assert first.store.pending("snapdragon-888") == 0
    assert collected.result.receipt["measure"]["profile_jobs"] == submitted.detail.split(", ")[1:]


def test_a_compile_refused_for_an_op_stores_the_cell_unsupported_with_the_service_message(s888, fake_hub, tmp_path,
                                                                                         artifacts):
    fake_hub.configure(fail_compile_if_op={"Gather": REFUSED_GATHER})  # CoordFill's graph has Gather, RETHINED's not
    outcomes = sweep(s888, tmp_path, artifacts, processes=1).run_jobs([Cell("coordfill", "default", 256), CELL])
    by_model = {outcome.cell.model: outcome for outcome in outcomes}
    assert by_model["coordfill"].status == "unsupported"
    assert REFUSED_GATHER in by_model["coordfill"].detail
    assert by_model["rethined"].status == "ok", by_model["rethined"].detail  # the sweep went on


def test_failed_profiles_and_stuck_jobs_are_failed_cells(s888, fake_hub, tmp_path, artifacts, monkeypatch):
    fake_hub.configure(fail_inference="Job timed out after 8h")
    [failed] = sweep(s888, tmp_path, artifacts, processes=1).run_jobs([CELL])
    assert failed.status == "failed" and "Job timed out after 8h" in failed.detail

    fake_hub.configure(fail_inference=None, inference_states=["CREATED"])
    monkeypatch.setenv("RBENCH_SNAPDRAGON_888_DEADLINE_S", "1")
    monkeypatch.setenv("RBENCH_SNAPDRAGON_888_POLL_INTERVAL_S", "0.3")
    [stuck] = sweep(s888, tmp_path / "stuck", artifacts, processes=1).run_jobs([CELL])
    assert stuck.status == "failed" and "not finished 1 s after submission" in stuck.detail
    assert "queued" in stuck.detail


def test_rate_limits_and_service_errors_are_retried(s888, fake_hub, tmp_path, artifacts):
    fake_hub.fail_next("create_compile_job", 429)  # a single-device compile does not retry by itself
    fake_hub.fail_next("get_job", 503, times=2)
    [outcome] = sweep(s888, tmp_path, artifacts, processes=1).run_jobs([CELL])
    assert outcome.status == "ok", outcome.detail


def test_a_rejected_or_missing_token_is_one_line_saying_how_to_configure_it(s888, fake_hub, monkeypatch):
    from rethined_bench.backends import runner_for

    fake_hub.fail_next("get_device_list", 401)
    rejected = runner_for(s888).availability()
    assert not rejected.ok and "rejected the API token from $QAI_HUB_API_TOKEN" in rejected.reason
    assert TOKEN not in rejected.reason + rejected.fix
    monkeypatch.delenv("QAI_HUB_API_TOKEN")
    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(fake_hub.files / "absent.ini"))
    missing = runner_for(s888).availability()
    assert (missing.ok, missing.reason) == (False, "no AI Hub API token configured")
    assert "qai-hub configure --api_token" in missing.fix and "QAI_HUB_API_TOKEN" in missing.fix


@pytest.mark.parametrize("version", ["1.0", "0.0"])
def test_profiles_without_per_iteration_times_stand_on_the_estimate_and_say_so(s888, fake_hub, tmp_path, artifacts,
                                                                                 version):
    fake_hub.configure(detail_version=version, memory_ranges=False, unspecified_layer=True)
    [outcome] = sweep(s888, tmp_path, artifacts, processes=1).run_jobs([CELL])
    assert outcome.status == "ok", outcome.detail
    assert outcome.result.samples == [[pytest.approx(4.2, rel=0.05)]]
    assert outcome.result.latency["unstable"]
    assert any("no per-iteration times" in reason for reason in outcome.result.latency["reasons"])
    assert outcome.result.peak_memory_mb is None


def test_job_states_and_failure_classes():
    assert [job_state(code) for code in ("CREATED", "OPTIMIZING_MODEL", "MEASURING_PERFORMANCE", "SUCCESS",
                                         "FAILED", "SOME_FUTURE_STATE")] == [
        "queued", "compiling", "profiling", "done", "failed", "running"]
    assert compile_failure_status(REFUSED_GATHER) == "unsupported"
    assert compile_failure_status("Error uploading to QDC: status code=500") == "failed"


def test_rbench_run_and_report_through_the_cli_leak_no_token(fake_hub, tmp_path):
    """The done-when of the AI Hub issue: `rbench run --device snapdragon-888 --model rethined --res 1024` in a
    subprocess (the fake installed there by aihub_site/sitecustomize.py), the report with the paper's numbers, and
    not one byte of the token in any file the run wrote or in its output."""
    env = fake_hub.subprocess_env() | {"QAI_HUB_API_TOKEN": TOKEN, "RBENCH_SNAPDRAGON_888_POLL_INTERVAL_S": "0"}
    work = tmp_path / "work"
    work.mkdir()

    def rbench(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rethined_bench.cli", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)

    run = rbench("run", "--device", "snapdragon-888", "--model", "rethined", "--res", "1024", "--processes", "2",
                 "--min-iters", "5")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(" ok ") == 2, run.stdout  # RETHINED's two benchmark variants
    report = rbench("report", "--device", "snapdragon-888", "--format", "markdown")
    assert report.returncode == 0, report.stderr
    text = next((work / "reports").glob("*.md")).read_text()
    assert "101.34" in text  # the paper's Snapdragon 888 latency for RETHINED, beside ours
    assert "hosted" in text.lower()
    leaks = [str(path) for path in work.rglob("*") if path.is_file() and TOKEN.encode() in path.read_bytes()]
    assert not leaks and TOKEN not in run.stdout + run.stderr + report.stdout + report.stderr
    assert TOKEN not in Path(fake_hub.state_path).read_text()


def test_the_token_is_only_read_from_the_environment_or_qai_hubs_config(s888):
    from rethined_bench.backends import runner_for

    runner = runner_for(s888)
    assert runner.token_source() == "$QAI_HUB_API_TOKEN"
    assert TOKEN not in repr(runner.settings) and TOKEN not in str(runner.describe())
    assert os.environ["QAI_HUB_API_TOKEN"] == TOKEN
