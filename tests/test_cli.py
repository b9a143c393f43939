"""The CLI as a subprocess: user errors exit 2 with one line; a tiny sweep stores, resumes and reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RBENCH = [sys.executable, "-m", "rethined_bench.cli"]
NO_AIHUB_CONFIG = Path("/nonexistent/qai_hub/client.ini")  # whatever the machine's ~/.qai_hub holds


def rbench(*args, cwd=None, check=False):
    done = subprocess.run([*RBENCH, *args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={k: v for k, v in os.environ.items() if k != "QAI_HUB_API_TOKEN"}
                          | {"COLUMNS": "200", "QAIHUB_CLIENT_INI": str(NO_AIHUB_CONFIG)})
    if check and done.returncode:
        raise AssertionError(done.stdout + done.stderr)
    return done


@pytest.mark.parametrize("args,message", [
    (["export", "--model", "nope"], "unknown model 'nope'"),
    (["export", "--res", "1000"], "resolution 1000x1000 is not supported"),
    (["export", "--model", "migan", "--res", "1000"], "must be multiples of 512"),
    (["export", "--model", "coordfill", "--res", "1000"], "must be multiples of 32"),
    (["export", "--target", "tflite"], "unknown target 'tflite'"),
    (["export", "--variant", "top7"], "unknown variant of rethined 'top7'"),
    (["run", "--device", "pixel-9"], "unknown device 'pixel-9'"),
    (["run", "--processes", "0"], "processes and min_iters must be >= 1"),
    (["report", "--db", "missing.sqlite"], "no results database at missing.sqlite"),
    (["report", "--format", "pdf"], "unknown format 'pdf'"),
    (["run", "--device", "snapdragon-888"], "device snapdragon-888 is not reachable here: no AI Hub API token "
                                            "configured; qai-hub configure --api_token"),
    (["run", "--detach"], "--detach is for hosted devices; host-cpu runs while rbench waits"),
    (["run", "--device", "jetson-nano"], "device jetson-nano is not reachable here: no host configured; set "
                                         "RBENCH_JETSON_NANO_HOST"),
    (["export", "--model", "migan", "--variant", "crop"], "MI-GAN variant 'crop' crops around the hole"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, args, message):
    done = rbench(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr


def test_models_lists_every_model_with_its_parameter_count():
    done = rbench("models", check=True)
    for name, params in [("rethined", "4,381,606"), ("migan", "5,973,366"), ("coordfill", "31,637,010")]:
        assert name in done.stdout and params in done.stdout


def test_a_sweep_stores_resumes_and_reports(tmp_path):
    args = ["run", "--model", "rethined", "--res", "512", "--processes", "2", "--min-iters", "2",
            "--min-time", "0", "--db", "r.sqlite", "--artifacts", "art"]
    first = rbench(*args, cwd=tmp_path, check=True)
    assert "2 ok" in first.stdout
    second = rbench(*args, cwd=tmp_path, check=True)
    assert "Nothing to measure" in second.stdout
    rbench("report", "--db", "r.sqlite", "--format", "json", "--out", "out", cwd=tmp_path, check=True)
    records = json.loads((tmp_path / "out" / "host-cpu.json").read_text())["results"]
    assert {(r["variant"], r["status"]) for r in records} == {("dense", "ok"), ("top1", "ok")}
    for record in records:
        assert record["latency_ms"]["n"] >= 4 and record["latency_ms"]["processes"] == 2
        assert record["load_ms"]["cold"] > 0 and record["artifact_sha256"]
        assert record["environment"]["host"]["cores"] >= 1
        assert record["compile_ms"] is None  # ONNX Runtime runs the artifact as it is: no device build
        assert record["receipt"]["measure"]["command"].endswith("-m rethined_bench.runners.worker")
        assert record["receipt"]["measure"]["processes"] == 2 and record["settings"]["intra_op_threads"] >= 1
    rbench("report", "--db", "r.sqlite", "--format", "markdown", "--out", "out", cwd=tmp_path, check=True)
    markdown = (tmp_path / "out" / "host-cpu.md").read_text()
    assert "| rethined |" in markdown and "| rethined (top1) |" in markdown and "17.59" in markdown


def test_a_killed_sweep_resumes_with_every_cell_stored_once(tmp_path):
    """kill -9 after the first stored cell; the re-run measures only what is missing."""
    import signal
    import sqlite3
    import time

    args = [*RBENCH, "run", "--model", "rethined", "--res", "512", "--processes", "1", "--min-iters", "2",
            "--min-time", "0", "--db", "r.sqlite", "--artifacts", "art"]
    sweep = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "r.sqlite"

    def stored() -> int:
        if not db.exists():
            return 0
        with sqlite3.connect(db) as conn:
            try:
                return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                return 0

    deadline = time.monotonic() + 600
    while stored() < 1 and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    assert stored() == 1
    rerun = rbench(*args[3:], cwd=tmp_path, check=True)
    assert "1 ok, 1 skipped" in rerun.stdout
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT variant, COUNT(*) FROM results WHERE status = 'ok' GROUP BY variant").fetchall()
    assert sorted(rows) == [("dense", 1), ("top1", 1)]


def test_a_database_written_by_schema_1_still_reports(tmp_path):
    """A store from rbench before compile_ms/receipt opens, migrates and reports, into a directory named with a dot."""
    shutil.copy(Path(__file__).parent / "data" / "results-schema1.sqlite", tmp_path / "old.sqlite")
    rbench("report", "--db", "old.sqlite", "--format", "json", "--out", "reports.v2", cwd=tmp_path, check=True)
    written = sorted(p.name for p in (tmp_path / "reports.v2").iterdir())
    assert written == ["host-cpu.json", "ipad-pro-m2.json", "table2.json"]
    records = json.loads((tmp_path / "reports.v2" / "host-cpu.json").read_text())["results"]
    assert {(r["variant"], r["status"]) for r in records} == {("top1", "ok"), ("crop", "failed")}
    printed = rbench("report", "--db", "old.sqlite", cwd=tmp_path, check=True).stdout
    assert "17.9" in printed and "17.59" in printed  # the ingested iPad number beside the paper's


def test_report_for_every_device_refuses_a_file_as_out(tmp_path):
    shutil.copy(Path(__file__).parent / "data" / "results-schema1.sqlite", tmp_path / "old.sqlite")
    done = rbench("report", "--db", "old.sqlite", "--format", "json", "--out", "all.json", cwd=tmp_path)
    assert done.returncode == 2 and "--out all.json names a file" in done.stderr
    single = rbench("report", "--db", "old.sqlite", "--device", "host-cpu", "--format", "json", "--out",
                    "host.json", cwd=tmp_path, check=True)
    assert "host.json" in single.stdout and (tmp_path / "host.json").is_file()
