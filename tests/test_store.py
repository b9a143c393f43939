"""Results store: schema, transactional writes, resume lookup, latest-per-cell, public export records."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from rethined_bench.errors import RbenchError
from rethined_bench.store import SCHEMA_VERSION, Result, ResultStore


def _result(status="ok", sha="a" * 64, height=1024, median=10.0, **extra):
    latency = {"median": median, "min": 9.0, "max": 12.0, "p90": 11.0, "p99": None, "mean": 10.2, "std": 0.5,
               "cv": 0.05, "n": 15, "processes": 3, "median_of_process_medians": median, "unstable": False,
               "reasons": []} if status == "ok" else None
    return Result(device="host-cpu", runner="local-ort", model="rethined", variant="dense", height=height,
                  width=height, target="onnx", precision="fp32", status=status, artifact_sha256=sha,
                  protocol_key="p1", latency=latency, samples=[[9.0, 10.0, 12.0]] if latency else None, **extra)


def test_schema_is_versioned(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    assert store.schema_version == SCHEMA_VERSION
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RbenchError, match="schema 99"):
        ResultStore(tmp_path / "r.sqlite")


def test_a_file_that_is_not_a_database_is_a_user_error(tmp_path):
    bogus = tmp_path / "r.sqlite"
    bogus.write_text("not sqlite")
    with pytest.raises(RbenchError, match="not an rbench results database"):
        ResultStore(bogus)


def test_rows_round_trip_with_their_json_fields(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    row_id = store.add(_result(load={"cold": 100.0, "warm": 50.0}, work={"params": 42, "gflops": 1.5}))
    [back] = store.all()
    assert back.id == row_id and back.samples == [[9.0, 10.0, 12.0]]
    assert back.load == {"cold": 100.0, "warm": 50.0} and back.work["params"] == 42
    public = back.to_public()
    assert public["latency_ms"]["median"] == 10.0 and public["load_ms"] == {"cold": 100.0, "warm": 50.0}
    assert public["params"] == 42 and public["resolution"] == [1024, 1024]


def test_resume_lookup_needs_same_device_artifact_protocol_and_ok_status(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    failed = _result(status="failed", sha="b" * 64, reason="export: boom")
    store.add(failed)
    assert not store.has_completed(failed.cell, "b" * 64, "p1")
    done = _result(sha="c" * 64)
    store.add(done)
    assert store.has_completed(done.cell, "c" * 64, "p1")
    assert not store.has_completed(done.cell, "c" * 64, "p2")
    assert not store.has_completed(("jetson-nano", *done.cell[1:]), "c" * 64, "p1")
    same_artifact_other_cell = _result(sha="c" * 64)
    same_artifact_other_cell.variant = "top1"
    assert not store.has_completed(same_artifact_other_cell.cell, "c" * 64, "p1")


def test_latest_keeps_the_newest_row_per_cell(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(_result(median=10.0))
    store.add(_result(median=12.0))
    store.add(_result(height=2048, median=30.0))
    latest = store.latest("host-cpu")
    assert [(r.height, r.latency["median"]) for r in latest] == [(1024, 12.0), (2048, 30.0)]


def test_invalid_status_is_refused():
    with pytest.raises(ValueError):
        _result(status="maybe")


def test_compile_time_and_receipt_round_trip(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    receipt = {"prepare": {"command": "trtexec --onnx=m.onnx --saveEngine=m.engine --fp16"},
               "measure": {"command": "trtexec --loadEngine=m.engine"}}
    store.add(_result(compile_ms=41250.0, receipt=receipt))
    [back] = store.all()
    assert back.compile_ms == 41250.0 and back.receipt == receipt
    assert back.to_public()["compile_ms"] == 41250.0 and back.to_public()["receipt"] == receipt


SCHEMA_1 = Path(__file__).parent / "data" / "results-schema1.sqlite"  # written by rbench 0.1.0 at schema 1


def test_a_schema_1_database_is_migrated_in_place_and_keeps_every_row(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(SCHEMA_1, path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta").fetchone() == ("1",)
        before = db.execute("SELECT id, device, model, variant, status, latency FROM results ORDER BY id").fetchall()
    store = ResultStore(path)
    assert store.schema_version == SCHEMA_VERSION == 3
    rows = store.all()
    assert [(r.id, r.device, r.model, r.variant, r.status) for r in rows] == [row[:5] for row in before]
    assert [(r.device, r.variant, r.status) for r in rows] == [("host-cpu", "top1", "ok"),
                                                               ("ipad-pro-m2", "dense", "ok"),
                                                               ("host-cpu", "crop", "failed")]
    assert all(r.compile_ms is None and r.receipt is None for r in rows)
    assert rows[0].latency["median"] > 0 and len(rows[0].samples) == 2
    store.add(_result(compile_ms=1.0, receipt={"prepare": {}}))  # and takes new rows with the new columns
    assert ResultStore(path).all()[-1].compile_ms == 1.0
    assert store.pending() == 0  # and has the table of hosted submissions (schema 3)


def test_a_hosted_submission_lives_until_its_cell_is_stored(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    done = _result(sha="abc")
    store.save_submission(done.cell, "abc", "p1", {"jobs": {"compile": ["j1"]}, "submitted_at": 1.0})
    store.save_submission(done.cell, "abc", "p2", {"jobs": {"compile": ["j2"]}, "submitted_at": 2.0})
    assert store.submission(done.cell, "abc", "p1")["jobs"] == {"compile": ["j1"]} and store.pending() == 2
    store.add(done)  # the result and the end of its submission, in one transaction
    assert store.submission(done.cell, "abc", "p1") is None and store.pending(done.device) == 1
    assert store.submission(done.cell, "abc", "p2")["jobs"] == {"compile": ["j2"]}
