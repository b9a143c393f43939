"""rbench ingest: documented CSV/JSON rows become results with provenance; bad rows store nothing."""

from __future__ import annotations

import json

import pytest

from rethined_bench.errors import RbenchError
from rethined_bench.ingest import ingest
from rethined_bench.report.tables import cell_text
from rethined_bench.store import ResultStore

CSV = """device,model,variant,resolution,compute_units,latency_median_ms,load_ms,source,measured_at
iphone-xs,rethined,dense,1024,ALL,118.4,95.2,Xcode 16.2 Core ML performance report,2026-11-20
iphone-xs,rethined,top1,2048,CPU_AND_NE,60.5,,Xcode 16.2 Core ML performance report,2026-11-20
"""


def test_csv_rows_are_stored_with_their_provenance(tmp_path):
    (tmp_path / "xcode.csv").write_text(CSV)
    store = ResultStore(tmp_path / "r.sqlite")
    ingest(tmp_path / "xcode.csv", store)
    first, second = store.latest("iphone-xs")
    assert (first.model, first.variant, first.height, first.target, first.precision) == (
        "rethined", "dense", 1024, "coreml", "fp16")
    assert first.latency["median"] == 118.4 and first.load == {"cold": 95.2, "warm": None}
    assert first.provenance["source"] == "ingested" and first.provenance["tool"].startswith("Xcode")
    assert first.settings == {"compute_units": "ALL"} and first.runner == "ingest"
    assert second.load is None and second.settings == {"compute_units": "CPU_AND_NE"}
    assert cell_text(first, detailed=True) == "118.4 (ingested median)"


def test_json_top_level_keys_are_row_defaults(tmp_path):
    path = tmp_path / "m2.json"
    path.write_text(json.dumps({"device": "ipad-pro-m2", "source": "Xcode", "results": [
        {"model": "rethined", "resolution": 2048, "latency_median_ms": 35.1, "load_ms": 88.0}]}))
    store = ResultStore(tmp_path / "r.sqlite")
    [result] = ingest(path, store)
    assert result.device == "ipad-pro-m2" and result.provenance["tool"] == "Xcode"
    assert result.settings == {"compute_units": "ALL"}  # from the profile


@pytest.mark.parametrize("bad,message", [
    ("latency_median_ms", "'latency_median_ms' must be a number"),
    ("resolution", "resolution 1000x1000 is not supported"),
    ("device", "unknown device 'pixel-9'"),
    ("model", "unknown model 'lama'"),
])
def test_a_bad_row_stores_nothing_and_names_the_problem(tmp_path, bad, message):
    row = {"device": "iphone-xs", "model": "rethined", "resolution": "1024", "latency_median_ms": "118.4"}
    row[bad] = {"latency_median_ms": "fast", "resolution": "1000", "device": "pixel-9", "model": "lama"}[bad]
    good = "iphone-xs,rethined,1024,100.0"
    (tmp_path / "x.csv").write_text("device,model,resolution,latency_median_ms\n" + good + "\n" +
                                    ",".join(row[k] for k in ("device", "model", "resolution",
                                                              "latency_median_ms")) + "\n")
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(RbenchError, match=message):
        ingest(tmp_path / "x.csv", store)
    assert store.all() == []


def test_unknown_fields_are_refused(tmp_path):
    (tmp_path / "x.csv").write_text("device,model,resolution,latency_median_ms,fps\niphone-xs,rethined,1024,1,5\n")
    with pytest.raises(RbenchError, match="row 1: unknown field 'fps'"):
        ingest(tmp_path / "x.csv", ResultStore(tmp_path / "r.sqlite"))
