"""rbench ingest: CSV/JSON rows, trtexec output and --exportTimes JSON become results with provenance; a bad file
stores nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rethined_bench.errors import RbenchError
from rethined_bench.ingest import CellOptions, ingest
from rethined_bench.measure.stats import summarize
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


@pytest.mark.parametrize("bad,value,message", [
    ("latency_median_ms", "fast", "'latency_median_ms' must be a number"),
    ("resolution", "1000", "resolution 1000x1000 is not supported"),
    ("resolution", "4K", "'resolution' must be a number of pixels, not '4K'"),
    ("resolution", "1024.5", "'resolution' must be a whole number of pixels"),
    ("device", "pixel-9", "unknown device 'pixel-9'"),
    ("model", "lama-xl", "unknown model 'lama-xl'"),
])
def test_a_bad_row_stores_nothing_and_names_the_problem(tmp_path, bad, value, message):
    row = {"device": "iphone-xs", "model": "rethined", "resolution": "1024", "latency_median_ms": "118.4"}
    row[bad] = value
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


# trtexec output and --exportTimes JSON: one cell named by the caller, its statistics from the file
TRTEXEC_LOGS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "trtexec"
real_logs = pytest.mark.skipif(not TRTEXEC_LOGS.is_dir(), reason=f"real trtexec logs not found at {TRTEXEC_LOGS}")
NANO = CellOptions(device="jetson-nano", model="rethined", resolution=1024)
GTX_1070 = """name = "gtx-1070"
display = "NVIDIA GeForce GTX 1070"
vendor = "nvidia"
target = "tensorrt"
precision = "fp32"
runner = "ssh-trtexec"
"""


def trtexec_log(number: str) -> Path:
    [path] = TRTEXEC_LOGS.glob(f"{number}_*.log")
    return path


@real_logs
def test_a_jetson_nano_trtexec_log_is_one_cell_with_its_provenance(tmp_path):
    path = trtexec_log("01")
    store = ResultStore(tmp_path / "r.sqlite")
    [result] = ingest(path, store, cell=NANO)
    [stored] = store.latest("jetson-nano")
    assert stored.to_public() | {"created_at": ""} == result.to_public()
    assert (result.device, result.model, result.variant, result.height, result.target, result.runner) == (
        "jetson-nano", "rethined", "dense", 1024, "tensorrt", "ingest")
    assert result.status == "ok" and result.precision == "fp32"  # the log's Precision: FP32, not the profile's fp16
    latency = result.latency
    assert (latency["median"], latency["min"], latency["max"], latency["mean"]) == (90.3035, 89.312, 91.492, 90.3919)
    assert (latency["p90"], latency["p99"], latency["percentiles"], latency["n"]) == (None, 91.492, {"p99": 91.492},
                                                                                      None)
    assert result.samples is None and result.load is None and result.compile_ms == 184708.0
    assert result.provenance == {"source": "ingested", "tool": "trtexec", "format": "log", "version": "8.2.1",
                                 "file": path.name, "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert result.receipt == {"command": "trtexec --workspace=2048 --onnx=weights/culane_18-INT32.onnx "
                                         "--saveEngine=weights/culane_18-INT32.engine"}
    assert result.environment == {"versions": {"tensorrt": "8.2.1"}, "gpu": "NVIDIA Tegra X1"}
    assert result.settings["gpu_compute_median_ms"] == 90.0183 and result.settings["data_transfers"] == "Enabled"
    assert cell_text(result, detailed=True) == "90.3 (ingested median)"


@real_logs
def test_a_load_engine_log_stores_its_load_time_under_a_user_profile(tmp_path):
    """07 (TensorRT 8.2.3, --loadEngine): ``Engine loaded in`` is the cold load; the precision is the profile's."""
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "gtx-1070.toml").write_text(GTX_1070)
    copy = tmp_path / "gtx1070_run.txt"  # detected by content, whatever the extension
    copy.write_bytes(trtexec_log("07").read_bytes())
    [result] = ingest(copy, ResultStore(tmp_path / "r.sqlite"), tmp_path / "profiles",
                      CellOptions(device="gtx-1070", model="migan", resolution=512))
    assert (result.device, result.model, result.variant, result.precision) == ("gtx-1070", "migan", "resize", "fp32")
    assert result.load["cold"] == 529.544 and "8.0/8.2" in result.load["covers"]
    assert result.compile_ms is None and result.latency["median"] == 0.15918
    assert result.provenance["file"] == "gtx1070_run.txt" and result.provenance["version"] == "8.2.3"


@real_logs
def test_the_unstable_warning_marks_the_cell(tmp_path):
    [result] = ingest(trtexec_log("04"), ResultStore(tmp_path / "r.sqlite"), cell=NANO)
    assert result.latency["unstable"] and result.latency["reasons"] == ["trtexec GPU compute CoV 11.0462% > 2.5%"]
    assert (result.latency["p90"], result.latency["p99"]) == (1.43353, 1.75824)
    assert result.precision == "fp16" and result.compile_ms == 171555.0 and result.load is None


@real_logs
@pytest.mark.parametrize("number,reason", [
    ("06", "Error[4]: ITensor::getDimensions: Error Code 4: Internal Error (/OneHot: an IIOneHotLayer cannot be used "
           "to compute a shape tensor)"),
    ("08", "trtexec FAILED with no [E] line, after: Finish parsing network model (before it: [TRT] "
           "[MemUsageSnapshot] End constructing builder kernel library: CPU 252 MiB, GPU 682 MiB | Start parsing "
           "network model)"),
])
def test_a_failed_build_is_stored_as_failed_with_its_errors(tmp_path, number, reason):
    store = ResultStore(tmp_path / "r.sqlite")
    [result] = ingest(trtexec_log(number), store, cell=NANO)
    assert [(r.status, r.reason) for r in store.all()] == [("failed", result.reason)] and result.latency is None
    assert result.reason.split("\n")[0] == reason
    assert cell_text(result).startswith("- (failed: ")


@real_logs
def test_a_log_without_a_summary_stores_nothing(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(RbenchError, match="13_.*without a performance summary"):
        ingest(trtexec_log("13"), store, cell=NANO)
    assert store.all() == []


def test_export_times_are_stored_with_rbench_statistics(tmp_path):
    latencies = [100.0 + (i % 10) / 10 for i in range(120)]
    queries = [{"startEnqMs": i * 110.0, "endEnqMs": i * 110.0 + 5, "startH2dMs": i * 110.0,
                "endH2dMs": i * 110.0 + 0.3, "startComputeMs": i * 110.0 + 0.3, "endComputeMs": i * 110.0 + 0.3 + ms,
                "startD2hMs": i * 110.0 + 0.3 + ms, "endD2hMs": i * 110.0 + 0.31 + ms, "h2dMs": 0.3,
                "computeMs": ms - 0.31, "d2hMs": 0.01, "latencyMs": ms, "endToEndMs": ms + 0.02}
               for i, ms in enumerate(latencies)]
    path = tmp_path / "times.json"
    path.write_text(json.dumps(queries))
    [result] = ingest(path, ResultStore(tmp_path / "r.sqlite"), cell=NANO)
    assert result.samples == [latencies] and result.latency == summarize([latencies]).to_dict()
    assert result.latency["n"] == 120 and result.latency["median"] == 100.45 and result.latency["p99"] == 100.9
    assert result.settings["gpu_compute_median_ms"] == pytest.approx(100.14)
    assert result.precision == "fp16" and result.receipt is None  # no precision or command in the file
    assert result.provenance["format"] == "exportTimes" and result.provenance["version"] is None


@pytest.mark.parametrize("cell,message", [
    (CellOptions(device="jetson-nano"), r"is an --exportTimes file, .*: pass --device, --model and --res "
                                        r"\(missing --model, --res\)"),
    (CellOptions(device="iphone-xs", model="rethined", resolution=1024), "iphone-xs runs coreml artifacts"),
    (CellOptions(device="jetson-nano", model="rethined", resolution=1000), "resolution 1000x1000 is not supported"),
])
def test_a_trtexec_file_needs_a_tensorrt_cell(tmp_path, cell, message):
    path = tmp_path / "times.json"
    path.write_text(json.dumps([{"latencyMs": 1.0, "computeMs": 0.9}]))
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(RbenchError, match=message):
        ingest(path, store, cell=cell)
    assert store.all() == []


def test_cell_options_are_refused_for_result_rows(tmp_path):
    (tmp_path / "xcode.csv").write_text(CSV)
    with pytest.raises(RbenchError, match="rows that name their own cells"):
        ingest(tmp_path / "xcode.csv", ResultStore(tmp_path / "r.sqlite"), cell=NANO)


@pytest.mark.parametrize("name,text,message", [
    ("notes.txt", "hello\n", "not a CSV or JSON of result rows, trtexec output, an --exportTimes JSON or an "
                             "ai-hub-models perf.yaml"),
    ("perf.yaml", "models:\n  - 3\n", "perf.yaml"),
    ("bad.json", "{oops", "bad.json is not valid JSON"),
    ("times.json", "[1, 2]", "not an --exportTimes file"),
])
def test_files_in_no_known_format_are_refused(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(RbenchError, match=message):
        ingest(tmp_path / name, ResultStore(tmp_path / "r.sqlite"), cell=NANO)


@real_logs
def test_cli_ingests_trtexec_output_and_names_missing_options(tmp_path):
    def rbench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rethined_bench.cli", "ingest", str(trtexec_log("01")),
                               "--db", str(tmp_path / "r.sqlite"), *args], capture_output=True, text=True)

    missing = rbench("--device", "jetson-nano")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        f"error: {trtexec_log('01').name} is trtexec output, which does not say what it measured: pass --device, "
        "--model and --res (missing --model, --res)"]
    stored = rbench("--device", "jetson-nano", "--model", "rethined", "--res", "1024")
    assert stored.returncode == 0, stored.stderr
    assert "stored jetson-nano rethined/dense @1024: 90.3 ms (trtexec)" in " ".join(stored.stdout.split())


AIHUB_PERF = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "aihub"
real_perf_yaml = pytest.mark.skipif(not AIHUB_PERF.is_dir(), reason=f"real perf.yaml fixtures not at {AIHUB_PERF}")
GALAXY = """name = "{name}"
display = "{device}"
vendor = "qualcomm"
target = "qnn"
precision = "fp16"
runner = "aihub"
[connection]
device_name = "{device}"
chipset = "{chipset}"
"""


def galaxy_profiles(tmp_path: Path) -> Path:
    """User profiles for the AI Hub phones ai-hub-models published numbers for (none for the Snapdragon 888)."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for name, device, chipset in (("galaxy-s24", "Samsung Galaxy S24", "qualcomm-snapdragon-8gen3"),
                                  ("galaxy-s23", "Samsung Galaxy S23", "qualcomm-snapdragon-8gen2")):
        (profiles / f"{name}.toml").write_text(GALAXY.format(name=name, device=device, chipset=chipset))
    return profiles


@real_perf_yaml
def test_a_new_schema_perf_yaml_stores_the_published_qnn_numbers_of_the_profiles_device(tmp_path):
    path = next(AIHUB_PERF.glob("01_*.yaml"))
    store = ResultStore(tmp_path / "r.sqlite")
    [result] = ingest(path, store, galaxy_profiles(tmp_path), CellOptions(device="galaxy-s24", resolution=512))
    assert (result.model, result.variant, result.precision, result.height) == ("lama-dilated", "qnn_dlc", "fp16", 512)
    assert result.latency["median"] == 52.976 and result.peak_memory_mb == 468  # milliseconds and MiB as printed
    assert result.provenance["job_id"] == "jgovvrdx5" and result.provenance["qairt"].startswith("2.42.0")
    assert result.environment["device_reported"]["placement_text"] == "333/333 layers on NPU"
    assert "hosted" in result.settings["hosted"] and store.latest("galaxy-s24")[0].latency["median"] == 52.976


@real_perf_yaml
@pytest.mark.parametrize("number,device,expected", [
    ("03", "galaxy-s23", {"torchscript_onnx_qnn": 84.076}),  # the S23 Ultra, matched by its chipset (8 Gen 2)
    ("04", "galaxy-s23", {"torchscript_onnx_qnn": 162.909}),
    ("04", "galaxy-s24", {"torchscript_onnx_qnn": 120.027}),
])
def test_an_old_schema_perf_yaml_is_in_microseconds_and_bytes(tmp_path, number, device, expected):
    path = next(AIHUB_PERF.glob(f"{number}_*.yaml"))
    results = ingest(path, ResultStore(tmp_path / "r.sqlite"), galaxy_profiles(tmp_path),
                     CellOptions(device=device, resolution=512))
    assert {r.variant: r.latency["median"] for r in results} == expected
    assert all(r.provenance["schema"] == "old" and r.provenance["job_id"] for r in results)


@real_perf_yaml
def test_a_perf_yaml_without_the_device_or_the_size_names_what_is_missing(tmp_path):
    path = next(AIHUB_PERF.glob("01_*.yaml"))
    with pytest.raises(RbenchError, match="does not say the input size: pass --device"):
        ingest(path, ResultStore(tmp_path / "r.sqlite"), cell=CellOptions(device="snapdragon-888"))
    with pytest.raises(RbenchError, match=r"no passed entry for snapdragon-888 .*it has: .*Samsung Galaxy S24"):
        ingest(path, ResultStore(tmp_path / "r.sqlite"), cell=CellOptions(device="snapdragon-888", resolution=512))
