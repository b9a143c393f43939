"""``rbench merge``: each measurement once (the newest copy), every other row kept, latest() still the newest per
cell, idempotent, inputs never written (a schema-1 input included), pending submissions, CLI exits and Table 2 over
a merged store."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from rethined_bench.errors import RbenchError
from rethined_bench.merge import merge_stores
from rethined_bench.store import SCHEMA_VERSION, Result, ResultStore

RBENCH = [sys.executable, "-m", "rethined_bench.cli"]
SCHEMA_1 = Path(__file__).parent / "data" / "results-schema1.sqlite"
JAN = "2026-01-0{}T00:00:00+00:00"
PROFILES = {"host-cpu": ("local-ort", "onnx", "fp32"), "jetson-nano": ("ssh-trtexec", "tensorrt", "fp16"),
            "ipad-pro-m2": ("local-coreml", "coreml", "fp16")}


def _result(device="host-cpu", height=1024, sha="a" * 64, protocol="p1", day=1, median=10.0, **extra) -> Result:
    """An ok RETHINED dense cell with what the reports read; ``day`` of January 2026 is its created_at."""
    runner, target, precision = PROFILES[device]
    latency = {"median": median, "p90": median * 1.1, "min": median * 0.9, "max": median * 1.2, "cv": 0.01, "n": 30,
               "processes": 3, "process_medians": [median] * 3, "unstable": False, "reasons": []}
    return Result(device=device, runner=runner, model="rethined", variant="dense", height=height, width=height,
                  target=target, precision=precision, status="ok", artifact_sha256=sha, protocol_key=protocol,
                  protocol={"processes": 3, "warmup": 1, "min_iters": 5, "min_time_s": 1.0, "max_time_s": 30.0},
                  latency=latency, samples=[[median, median + day], [median - 0.5]], load={"cold": 80.0, "warm": 9.0},
                  work={"params": 4.3e6, "fvcore_gmacs": 5.0, "gflops": 10.0, "bytes": 2e8},
                  roofline={"floor_ms": median / 4, "bound": "compute"}, settings={"threads": 2},
                  environment={"host": {"cpu": "Test CPU", "usable_cores": 2, "memory_gib": 8, "os": "Linux"},
                               "versions": {"onnxruntime": "1.20"}, "rbench": {"version": "0.1", "git": "abc1234"}},
                  created_at=JAN.format(day), **extra)


def _ingested(tool="xcode-coreml-report") -> Result:
    """An ingested row: no artifact sha256 nor protocol key."""
    return _result("ipad-pro-m2", sha=None, protocol=None, median=20.0,
                   provenance={"source": "ingested", "tool": tool, "file": "x.csv"})


def _store(path: Path, results: list[Result]) -> Path:
    store = ResultStore(path)
    for result in results:
        store.add(result)
    return path


def _measurements(path: Path) -> list[tuple]:
    """Each row as (device, height, sha, protocol, created_at, samples), in id order."""
    return [(r.device, r.height, r.artifact_sha256, r.protocol_key, r.created_at, r.samples)
            for r in ResultStore(path).all()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rbench(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*RBENCH, *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env=os.environ | {"COLUMNS": "200"})


@pytest.fixture
def two_machines(tmp_path) -> tuple[Path, Path]:
    """Overlapping stores: the same measurement in both (created a day apart), other protocols and artifacts of that
    cell, cells of one store only, and one ingested row in both."""
    host = _store(tmp_path / "host.sqlite", [
        _result(sha="0" * 64, day=1),                 # an older artifact of the cell: history
        _result(day=2, median=10.0),                  # the shared measurement, older copy
        _result(height=2048, sha="b" * 64, day=2),    # this store only
        _ingested(),
    ])
    nano = _store(tmp_path / "nano.sqlite", [
        _ingested(),                                  # identical to host's
        _result(day=3, median=11.0),                  # the shared measurement, newer copy
        _result(protocol="p2", day=4, median=12.0),   # same cell and artifact, another protocol
        _result("jetson-nano", sha="c" * 64, day=2, median=1100.0),
    ])
    return host, nano


def test_each_measurement_is_kept_once_with_every_sample(tmp_path, two_machines):
    host, nano = two_machines
    summary = merge_stores([host, nano], tmp_path / "all.sqlite")
    merged = _measurements(tmp_path / "all.sqlite")
    host_rows, nano_rows = _measurements(host), _measurements(nano)
    # gone: host's older copy of the shared measurement and nano's copy of the ingested row
    expected = [m for m in host_rows if m != host_rows[1]] + nano_rows[1:]
    assert sorted(merged, key=str) == sorted(expected, key=str)
    assert len(merged) == 6 and merged == sorted(merged, key=lambda m: m[4])  # oldest first: latest() = newest
    [newest] = [m for m in merged if m[2] == "a" * 64 and m[3] == "p1"]
    assert newest[4] == JAN.format(3) and newest[5] == [[11.0, 14.0], [10.5]]
    assert [(s.read, s.added, s.skipped) for s in summary.inputs] == [(4, 3, 1), (4, 3, 1)]
    assert (summary.before, summary.after) == (0, 6)


def test_two_ingested_rows_that_differ_in_provenance_are_both_kept(tmp_path):
    a = _store(tmp_path / "a.sqlite", [_ingested("xcode-coreml-report")])
    b = _store(tmp_path / "b.sqlite", [_ingested("trtexec")])
    merge_stores([a, b], tmp_path / "all.sqlite")
    assert [r.provenance["tool"] for r in ResultStore(tmp_path / "all.sqlite").all()] == ["xcode-coreml-report",
                                                                                          "trtexec"]


def test_latest_is_the_newest_row_whatever_order_the_inputs_come_in(tmp_path):
    newer = _store(tmp_path / "newer.sqlite", [_result(sha="e" * 64, day=5, median=8.0)])
    older = _store(tmp_path / "older.sqlite", [_result(sha="d" * 64, day=1, median=9.0)])
    out = tmp_path / "all.sqlite"
    merge_stores([newer], out)
    merge_stores([older], out)  # into an existing output: the older row goes before the newer one
    assert [r.latency["median"] for r in ResultStore(out).all()] == [9.0, 8.0]
    assert [r.latency["median"] for r in ResultStore(out).latest()] == [8.0]


def test_merging_again_changes_nothing(tmp_path, two_machines):
    out = tmp_path / "all.sqlite"
    merge_stores(list(two_machines), out)
    first = [(r.id, r.to_public()) for r in ResultStore(out).all()]
    again = merge_stores(list(two_machines), out)
    assert [(r.id, r.to_public()) for r in ResultStore(out).all()] == first
    assert [s.added for s in again.inputs] == [0, 0] and (again.before, again.after) == (6, 6)
    merge_stores([out], tmp_path / "copy.sqlite")
    assert _measurements(tmp_path / "copy.sqlite") == _measurements(out)


def test_a_schema_1_input_is_migrated_in_a_copy_and_left_as_it_was(tmp_path):
    old = tmp_path / "old.sqlite"
    shutil.copy(SCHEMA_1, old)
    before = _sha256(old)
    summary = merge_stores([old], tmp_path / "all.sqlite")
    assert _sha256(old) == before
    merged = ResultStore(tmp_path / "all.sqlite")
    assert merged.schema_version == SCHEMA_VERSION and summary.inputs[0].added == 3
    assert [(r.device, r.variant, r.status) for r in merged.all()] == [("host-cpu", "top1", "ok"),
                                                                       ("ipad-pro-m2", "dense", "ok"),
                                                                       ("host-cpu", "crop", "failed")]
    assert all(r.compile_ms is None and r.receipt is None for r in merged.all())


def test_a_submission_is_carried_over_only_while_its_result_is_missing(tmp_path):
    waiting = _result(sha="f" * 64)
    answered = _result(sha="9" * 64)
    a = _store(tmp_path / "a.sqlite", [])
    ResultStore(a).save_submission(waiting.cell, "f" * 64, "p1", {"profile": ["j1"]})
    ResultStore(a).save_submission(answered.cell, "9" * 64, "p1", {"profile": ["j2"]})
    b = _store(tmp_path / "b.sqlite", [answered])
    summary = merge_stores([a, b], tmp_path / "all.sqlite")
    out = ResultStore(tmp_path / "all.sqlite")
    assert out.pending() == 1 and out.submission(waiting.cell, "f" * 64, "p1") == {"profile": ["j1"]}
    assert [s.submissions for s in summary.inputs] == [1, 0]
    merge_stores([_store(tmp_path / "c.sqlite", [waiting])], tmp_path / "all.sqlite")  # its result arrives later
    assert out.pending() == 0


def _sqlite_without_meta(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE t (x)")


@pytest.mark.parametrize("make", [lambda p: p.write_bytes(b"not sqlite"), lambda p: p.write_bytes(b""),
                                  _sqlite_without_meta], ids=["text", "empty", "other-sqlite"])
def test_an_input_that_is_not_a_results_database_is_refused_before_anything_is_written(tmp_path, make):
    bad = tmp_path / "bad.sqlite"
    make(bad)
    before = _sha256(bad)
    good = _store(tmp_path / "good.sqlite", [_result()])
    with pytest.raises(RbenchError, match="bad.sqlite is not an rbench results database"):
        merge_stores([good, bad], tmp_path / "all.sqlite")
    assert not (tmp_path / "all.sqlite").exists() and _sha256(bad) == before


def test_a_missing_input_exits_2_with_one_line(tmp_path):
    done = rbench("merge", "missing.sqlite", "-o", "all.sqlite", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no results database at missing.sqlite" in lines[0]
    assert not (tmp_path / "all.sqlite").exists()


def test_table2_of_a_merged_store_holds_every_device(tmp_path):
    _store(tmp_path / "host-cpu.sqlite", [_result(median=123.4)])
    _store(tmp_path / "jetson-nano.sqlite", [_result("jetson-nano", sha="c" * 64, median=1100.0)])
    done = rbench("merge", "host-cpu.sqlite", "jetson-nano.sqlite", "-o", "all.sqlite", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "host-cpu.sqlite: 1 rows read, 1 added, 0 duplicates skipped" in done.stdout
    done = rbench("report", "--db", "all.sqlite", "--format", "markdown", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    table2 = (tmp_path / "reports" / "table2.md").read_text()
    assert "host-cpu" in table2 and "jetson-nano" in table2
    assert "123.4" in table2 and "1100.0" in table2
