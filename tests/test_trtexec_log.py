"""trtexec output parser: every real log in ../shared/fixtures/trtexec/ (TensorRT 8.0-10.16), with the numbers each
file shows, the format traps the fixtures README lists, and the --exportTimes JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from rethined_bench.runners.trtexec_log import (
    ExportedTimes,
    TrtexecLogError,
    parse_export_times,
    parse_log,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "trtexec"
# the tests of real logs skip without them; the synthetic ones (refusals, --exportTimes) always run
real_logs = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"real trtexec logs not found at {FIXTURES}")


def fixture_text(number: str) -> str:
    [path] = FIXTURES.glob(f"{number}_*.log")
    return path.read_text()


def parsed(number: str):
    return parse_log(fixture_text(number))


# what each file shows: (version, passed, precision, engine loaded from a file, has a summary)
OVERVIEW = {
    "01": ("8.2.1", True, "fp32", False, True),
    "02": (None, None, "fp16", False, True),
    "03": (None, None, "fp16", False, True),
    "04": ("10.14.1", True, "fp16", False, True),
    "05": ("10.7.0", None, None, True, True),
    "06": ("10.3.0", False, None, False, False),
    "07": ("8.2.3", True, None, True, True),
    "08": ("8.2.3", False, "fp16", False, False),
    "09": ("8.4.1", True, None, True, True),
    "10": ("8.0.3", True, "fp16", False, True),
    "11": ("10.16.1", True, "fp32", False, True),
    "12": ("10.16.1", True, None, True, True),
    "13": ("10.16.1", True, None, True, False),
}


@real_logs
def test_the_overview_covers_every_fixture():
    assert sorted(path.name[:2] for path in FIXTURES.glob("*.log")) == sorted(OVERVIEW)


@real_logs
@pytest.mark.parametrize("number", sorted(OVERVIEW))
def test_every_fixture_parses_to_what_it_shows(number):
    log = parsed(number)
    version, passed, precision, loaded, has_summary = OVERVIEW[number]
    assert (log.version, log.passed, log.precision, log.engine_loaded_from_file) == (
        version, passed, precision, loaded)
    assert (log.summary is not None) == has_summary
    if has_summary:
        assert log.summary.latency is not None and log.summary.gpu_compute_time is not None
    assert (log.errors != []) == (number == "06")


@real_logs
def test_jetson_nano_8_2_build_and_run():
    log = parsed("01")
    assert log.command == ("trtexec --workspace=2048 --onnx=weights/culane_18-INT32.onnx "
                           "--saveEngine=weights/culane_18-INT32.engine")
    assert log.device_name == "NVIDIA Tegra X1" and log.options["Precision"] == "FP32"
    assert (log.build_ms, log.engine_loaded_ms, log.deserialize_ms, log.load_ms_cold) == (184708.0, None, None, None)
    assert log.engine_size_mib == 186.0 and log.cov_percent is None and log.timed_queries == 35
    s = log.summary
    assert (s.latency.min_ms, s.latency.max_ms, s.latency.mean_ms, s.latency.median_ms) == (
        89.312, 91.492, 90.3919, 90.3035)
    assert s.latency.percentiles_ms == {"p99": 91.492}
    assert s.end_to_end_host_latency.median_ms == 90.3167
    assert s.enqueue_time.mean_ms == 6.19246 and s.h2d_latency.median_ms == 0.276855
    assert s.gpu_compute_time.median_ms == 90.0183 and s.d2h_latency.percentiles_ms == {"p99": 0.00881958}
    assert (s.throughput_qps, s.total_host_walltime_ms, s.total_gpu_compute_time_ms) == (11.0613, 3164.19, 3153.71)


@real_logs
@pytest.mark.parametrize("number,latency,enqueue_mean,compute_median,throughput", [
    ("02", (100.036, 104.225, 101.425, 101.092, 104.225), 58.9862, 100.67, 9.85818),
    ("03", (93.6714, 97.5481, 94.7022, 94.5459, 97.5481), 6.55616, 94.1343, 10.5582),
])
def test_pasted_summaries_with_an_elided_head(number, latency, enqueue_mean, compute_median, throughput):
    """02/03: a shell line with a leading space, a literal ``...``, then the summary only."""
    log = parsed(number)
    assert log.command.startswith("/usr/src/tensorrt/bin/trtexec --onnx=/home/jetson/deeplab-edgetpu")
    assert log.command.endswith(" --fp16") and log.version is None and log.passed is None
    s = log.summary
    stat = s.latency
    assert (stat.min_ms, stat.max_ms, stat.mean_ms, stat.median_ms, stat.percentiles_ms["p99"]) == latency
    assert s.enqueue_time.mean_ms == enqueue_mean and s.gpu_compute_time.median_ms == compute_median
    assert s.throughput_qps == throughput and s.end_to_end_host_latency is not None


@real_logs
def test_10_14_build_with_percentiles_and_the_unstable_warning():
    log = parsed("04")
    assert log.options["Precision"] == "FP32+FP16" and log.device_name == "NVIDIA GeForce RTX 4080 SUPER"
    assert (log.build_ms, log.deserialize_ms, log.engine_loaded_ms) == (171555.0, 31.6321, None)
    assert log.load_ms_cold is None  # deserialising a freshly built engine from memory is not a cold load
    assert log.engine_size_mib == 7.0 and log.cov_percent == 11.0462
    s = log.summary
    assert s.latency.percentiles_ms == {"p90": 1.43353, "p95": 1.51978, "p99": 1.75824}
    assert (s.latency.median_ms, s.latency.mean_ms) == (1.23547, 1.27044)
    assert s.gpu_compute_time.median_ms == 1.15198 and s.throughput_qps == 741.755
    assert s.end_to_end_host_latency is None


@real_logs
def test_10_7_load_engine_tail_without_a_head():
    """05 starts with a literal ``...`` and ends at Total GPU Compute Time: no command, no &&&& line."""
    log = parsed("05")
    assert log.command is None and log.passed is None
    assert (log.engine_loaded_ms, log.deserialize_ms, log.load_ms_cold) == (None, 212.037, 212.037)
    assert "10.x" in log.load_covers and log.engine_size_mib == 472.0 and log.timed_queries == 101
    s = log.summary
    assert (s.latency.median_ms, s.latency.percentiles_ms["p99"]) == (30.7695, 31.5444)
    assert s.enqueue_time.median_ms == 0.00360107 and s.total_gpu_compute_time_ms == 3051.29


@real_logs
def test_failed_onnx_parse_keeps_its_error_lines():
    """06: the first [E] line has no timestamp; the protobuf node dump in between has no prefix at all."""
    log = parsed("06")
    assert log.errors[0] == ("Error[4]: ITensor::getDimensions: Error Code 4: Internal Error (/OneHot: an "
                             "IIOneHotLayer cannot be used to compute a shape tensor)")
    assert log.errors[1] == ('[TRT] ModelImporter.cpp:949: While parsing node number 146 [Tile -> '
                             '"/Tile_output_0"]:')
    assert log.errors[-3:] == ["Parsing model failed", "Failed to create engine from model or file.",
                               "Engine set up failed"]
    assert len(log.errors) == 9 and not any("op_type" in line for line in log.errors)
    assert log.context == [] and log.summary is None
    assert log.command.startswith("trtexec --onnx=data/mobile_sam_mask_decoder.onnx")  # from the FAILED line


@real_logs
def test_failed_build_without_error_lines_keeps_its_last_lines():
    log = parsed("08")
    assert log.errors == []
    assert log.context[-2:] == ["Start parsing network model", "Finish parsing network model"]
    assert len(log.context) == 3


@real_logs
def test_8_2_load_engine_covers_read_and_deserialise():
    """07: ``Engine loaded in`` comes after ``Loaded engine size`` and deserialisation; no ``deserialized`` line."""
    log = parsed("07")
    assert (log.engine_loaded_ms, log.deserialize_ms, log.load_ms_cold) == (529.544, None, 529.544)
    assert "8.0/8.2" in log.load_covers
    assert log.options["Precision"] == "FP32" and log.precision is None  # default build options, not the engine's
    s = log.summary
    assert (s.latency.mean_ms, s.end_to_end_host_latency.mean_ms) == (0.159595, 0.284975)
    assert s.gpu_compute_time.median_ms == 0.152588 and s.throughput_qps == 6199.99


@real_logs
def test_8_4_load_engine_reads_then_deserialises_without_end_to_end():
    log = parsed("09")
    assert (log.engine_loaded_ms, log.deserialize_ms) == (11.0251, 421.986)
    assert log.load_ms_cold == pytest.approx(433.0111, abs=1e-9) and "file read" in log.load_covers
    s = log.summary
    assert s.end_to_end_host_latency is None and s.latency.percentiles_ms == {"p99": 0.178589}
    assert (s.latency.median_ms, s.gpu_compute_time.median_ms) == (0.161438, 0.153687)


@real_logs
def test_8_0_prints_an_integer_version_and_megabytes():
    log = parsed("10")
    assert log.version == "8.0.3" and log.build_ms == 5453.99
    assert log.engine_size_mib == pytest.approx(12e6 / 2**20)
    s = log.summary
    assert (s.latency.max_ms, s.latency.median_ms, s.latency.percentiles_ms["p99"]) == (2.22339, 0.158264, 0.16626)
    assert s.end_to_end_host_latency.median_ms == 0.284546


@real_logs
def test_10_16_build_without_trailing_spaces():
    log = parsed("11")
    assert log.options["Precision"] == "FP32" and log.options["Output"] == ""
    assert (log.build_ms, log.deserialize_ms, log.cov_percent) == (8091.38, 6.76279, 6.58751)
    s = log.summary
    assert (s.latency.median_ms, s.latency.percentiles_ms["p99"], s.throughput_qps) == (0.0440674, 0.0512695, 15374.3)
    assert s.total_host_walltime_ms == 3000.13


@real_logs
def test_verbose_explanations_are_not_metrics():
    """12: ``[V] Latency: the summation of ...`` follows the summary; only [I] lines count."""
    log = parsed("12")
    s = log.summary
    assert s.latency.median_ms == 0.0388184 and s.throughput_qps == 24896.9
    assert s.total_gpu_compute_time_ms == 2895.41
    assert s.latency == s.gpu_compute_time  # --noDataTransfers
    assert (s.h2d_latency.max_ms, s.d2h_latency.percentiles_ms) == (0.0, {"p90": 0.0, "p95": 0.0, "p99": 0.0})
    assert (log.engine_loaded_ms, log.load_ms_cold, log.options["Data transfers"]) == (None, 24.5724, "Disabled")


@real_logs
def test_a_numeric_verbose_line_in_the_summary_is_ignored():
    text = fixture_text("01").replace(
        "[07/14/2023-11:55:18] [I] Total Host Walltime",
        "[07/14/2023-11:55:18] [V] Latency: min = 1 ms, max = 1 ms, mean = 1 ms, median = 1 ms\n"
        "[07/14/2023-11:55:18] [V] Throughput: 1 qps\n[07/14/2023-11:55:18] [I] Total Host Walltime")
    summary = parse_log(text).summary
    assert summary.latency.median_ms == 90.3035 and summary.throughput_qps == 11.0613


@real_logs
def test_dump_profile_without_separate_run_has_no_summary():
    log = parsed("13")
    assert log.summary is None and log.passed is True and log.errors == []
    assert log.load_ms_cold == 25.8638 and log.timed_queries is None


@pytest.mark.parametrize("text", ["", "device,model\nx,y\n", "[I] hello\n", "&&&& PASSED TensorRT.other # x"])
def test_text_that_is_not_trtexec_output_is_refused(text):
    with pytest.raises(TrtexecLogError, match="not trtexec output"):
        parse_log(text)


def test_non_text_is_refused_with_the_same_error():
    with pytest.raises(TrtexecLogError, match="must be text"):
        parse_log(b"&&&& PASSED")  # type: ignore[arg-type]


@real_logs
@pytest.mark.parametrize("number", ["01", "06"])
def test_every_truncation_parses_or_is_refused(number):
    """A log cut after any line (a pasted head) parses to what it holds, or is not trtexec output yet."""
    lines = fixture_text(number).splitlines(keepends=True)
    for end in range(len(lines) + 1):
        try:
            parse_log("".join(lines[:end]))
        except TrtexecLogError:
            assert end < len(lines)


def export_times_json(count: int, end_to_end: bool = True) -> list[dict[str, float]]:
    """``count`` queries in trtexec's --exportTimes schema (8.2.1's, with endToEndMs when asked)."""
    queries, start = [], 0.0
    for i in range(count):
        h2d, compute, d2h = 0.25, 90.0 + i % 7, 0.01
        query = {"startEnqMs": start, "endEnqMs": start + 6.0, "startH2dMs": start, "endH2dMs": start + h2d,
                 "startComputeMs": start + h2d, "endComputeMs": start + h2d + compute,
                 "startD2hMs": start + h2d + compute, "endD2hMs": start + h2d + compute + d2h, "h2dMs": h2d,
                 "computeMs": compute, "d2hMs": d2h, "latencyMs": h2d + compute + d2h}
        if end_to_end:
            query["endToEndMs"] = query["latencyMs"] + 0.02
        queries.append(query)
        start += 100.0
    return queries


def test_export_times_gives_per_query_latency_and_compute():
    times = parse_export_times(export_times_json(10))
    assert isinstance(times, ExportedTimes)
    assert times.compute_ms == [90.0 + i % 7 for i in range(10)]
    assert times.latency_ms == [0.25 + 90.0 + i % 7 + 0.01 for i in range(10)]
    assert times.end_to_end_ms == [latency + 0.02 for latency in times.latency_ms]
    assert parse_export_times(export_times_json(3, end_to_end=False)).end_to_end_ms is None


@pytest.mark.parametrize("data,message", [
    ([], "non-empty JSON list"),
    ({"latencyMs": 1.0}, "non-empty JSON list"),
    ([{"computeMs": 1.0}], "query 1: 'latencyMs'"),
    ([{"latencyMs": 1.0, "computeMs": 1.0}, {"latencyMs": "2", "computeMs": 1.0}], "query 2: 'latencyMs'"),
    ([{"latencyMs": True, "computeMs": 1.0}], "'latencyMs' must be a finite number"),
    ([{"latencyMs": float("nan"), "computeMs": 1.0}], "'latencyMs' must be a finite number"),
    ([{"latencyMs": 0, "computeMs": 0}], "'latencyMs' 0"),
])
def test_malformed_export_times_are_refused(data, message):
    with pytest.raises(TrtexecLogError, match=message):
        parse_export_times(data)


TIME_DESERIALIZE = {
    # the two shapes of the line in trtexec's source (no real --timeDeserialize log is public: fixtures README)
    "8.6+": ("Total deserialization time = 801.6 milliseconds in 20 iterations, average time = 40.08 milliseconds, "
             "first time = 41.25 milliseconds.", 20),
    "8.4": ("Total deserialization time = 801.6 milliseconds, average time = 40.08, first time = 41.25.", None),
}


@pytest.mark.parametrize("shape", sorted(TIME_DESERIALIZE))
def test_time_deserialize_gives_first_and_average_warm_deserialization(shape):
    total, runs = TIME_DESERIALIZE[shape]
    log = parse_log("\n".join([
        "&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec --loadEngine=/tmp/m.engine --timeDeserialize",
        "[12/02/2026-10:00:00] [I] Begin deserialization engine timing...",
        "[12/02/2026-10:00:00] [I] First deserialization time = 41.25 milliseconds",
        f"[12/02/2026-10:00:01] [I] {total}",
        "[12/02/2026-10:00:01] [I] Deserialization Bandwidth = 1.52 GB/s",
        "&&&& PASSED TensorRT.trtexec [TensorRT v8601] # trtexec --loadEngine=/tmp/m.engine --timeDeserialize",
    ]))
    assert (log.deserialize_first_ms, log.deserialize_average_ms, log.deserialize_runs) == (41.25, 40.08, runs)
    assert log.passed and log.summary is None


def test_logs_without_time_deserialize_have_no_warm_deserialization():
    log = parse_log((FIXTURES / "09_gtx1070_trt8.4.1_loadEngine_verbose_no-e2e.log").read_text()) \
        if FIXTURES.is_dir() else parse_log("[I] TensorRT version: 8.4.1")
    assert (log.deserialize_first_ms, log.deserialize_average_ms, log.deserialize_runs) == (None, None, None)
