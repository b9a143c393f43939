"""perf.yaml reader: the four real ai-hub-models files in ../shared/fixtures/aihub/ (new schema v0.46.0, old schema
v0.3.0/v0.4.0), with the numbers each file holds, plus files that are not perf.yaml at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rethined_bench.errors import RbenchError
from rethined_bench.runners.aihub_perf_yaml import (
    LayerCounts,
    PerfYaml,
    PublishedPerf,
    parse_perf_yaml,
    read_perf_yaml,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "aihub"
QAIRT_242 = "2.42.0.251225135753_193295"


def fixture_path(number: str) -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"real AI Hub perf.yaml files not found at {FIXTURES}")
    [path] = FIXTURES.glob(f"{number}_*.yaml")
    return path


def entry(parsed: PerfYaml, device: str, runtime: str) -> PublishedPerf:
    [found] = [r for r in parsed.passed if r.device == device and r.runtime == runtime]
    return found


def test_new_schema_lama_dilated():
    parsed = read_perf_yaml(fixture_path("01"))
    assert parsed.schema == "new"
    assert len(parsed.passed) == 27
    assert parsed.not_passed == ()
    assert {r.runtime for r in parsed.passed} == {"tflite", "qnn_dlc", "onnx"}
    assert len({r.device for r in parsed.passed}) == 11  # of 29 supported_devices

    assert entry(parsed, "Samsung Galaxy S24", "tflite") == PublishedPerf(
        schema="new", model="LaMa-Dilated", precision="float", device="Samsung Galaxy S24",
        chipset=None, os=None, os_name=None, runtime="tflite",
        inference_ms=52.512, peak_memory_mib=(1.0, 551.0),
        layers=LayerCounts(total=340, npu=340, gpu=0, cpu=0), primary_compute_unit="NPU",
        job_id="jp2mmwo45", job_status="Passed", tool_versions={"qairt": QAIRT_242, "tflite": "2.17.0"},
    )
    # tool versions are per runtime: the onnx path ran an older QAIRT
    onnx = entry(parsed, "Samsung Galaxy S24", "onnx")
    assert onnx.tool_versions == {"qairt": "2.37.1.250807093845_124904", "onnx_runtime": "1.23.0"}
    assert (onnx.inference_ms, onnx.peak_memory_mib, onnx.layers.total) == (53.225, (12.0, 426.0), 336)
    qnn = entry(parsed, "Snapdragon X Elite CRD", "qnn_dlc")
    assert (qnn.inference_ms, qnn.job_id, qnn.peak_memory_mib) == (74.997, "jpevvz615", (4.0, 4.0))


def test_new_schema_aotgan_and_a_job_shared_by_two_devices():
    parsed = read_perf_yaml(fixture_path("02"))
    assert (parsed.schema, len(parsed.passed), parsed.not_passed) == ("new", 27, ())
    assert {r.model for r in parsed.passed} == {"AOT-GAN"}
    iq9075 = entry(parsed, "Dragonwing IQ-9075 EVK", "tflite")
    assert (iq9075.inference_ms, iq9075.job_id, iq9075.peak_memory_mib) == (213.878, "j5w99ne6p", (2.0, 45.0))
    assert iq9075.layers == LayerCounts(total=245, npu=245, gpu=0, cpu=0)
    # the file lists one profile job under both the QCS8275 proxy and the SA7255P
    proxy, sa7255p = entry(parsed, "QCS8275 (Proxy)", "tflite"), entry(parsed, "SA7255P ADP", "tflite")
    assert proxy.job_id == sa7255p.job_id == "jpvwwxkjg"
    assert proxy.inference_ms == sa7255p.inference_ms


def test_old_schema_lama_dilated_microseconds_and_bytes():
    parsed = read_perf_yaml(fixture_path("03"))
    assert parsed.schema == "old"
    assert parsed.not_passed == ()
    tflite, qnn = parsed.passed
    assert tflite == PublishedPerf(
        schema="old", model="LaMa-Dilated", precision="fp16", device="Samsung Galaxy S23 Ultra",
        chipset="Snapdragon® 8 Gen 2", os="13", os_name="Android", runtime="torchscript_onnx_tflite",
        inference_ms=88.596,  # 88596.0 µs
        peak_memory_mib=(3.13671875, 132.76636505126953),  # 3289088-139215624 bytes
        layers=LayerCounts(total=346, npu=346, gpu=0, cpu=0), primary_compute_unit="NPU",
        job_id="jqpyojvr5", job_status="Passed", tool_versions={},
    )
    assert (qnn.runtime, qnn.inference_ms, qnn.job_id) == ("torchscript_onnx_qnn", 84.076, "j2p0m2e2g")
    assert qnn.layers == LayerCounts(total=333, npu=333, gpu=0, cpu=0)
    assert qnn.peak_memory_mib == (4.11328125, 33.12427520751953)  # 4313088-34733320 bytes


def test_old_schema_aotgan_two_devices_in_varying_key_order():
    parsed = read_perf_yaml(fixture_path("04"))
    by_key = {(r.device, r.runtime): r for r in parsed.passed}
    assert len(parsed.passed) == len(by_key) == 4
    # the qnn entries follow reference_device_info in the file, yet belong to the same device
    times = {key: r.inference_ms for key, r in by_key.items()}
    assert times == {
        ("Samsung Galaxy S23", "torchscript_onnx_tflite"): 172.836,
        ("Samsung Galaxy S23", "torchscript_onnx_qnn"): 162.909,
        ("Samsung Galaxy S24", "torchscript_onnx_tflite"): 127.366,
        ("Samsung Galaxy S24", "torchscript_onnx_qnn"): 120.027,
    }
    s24_qnn = by_key["Samsung Galaxy S24", "torchscript_onnx_qnn"]
    assert s24_qnn.peak_memory_mib == (0.0, 134.32752990722656)  # min 0 bytes is a value, not a missing one
    assert (s24_qnn.chipset, s24_qnn.os, s24_qnn.job_id) == ("Snapdragon® 8 Gen 3", "14", "jogkz1ogd")
    assert by_key["Samsung Galaxy S23", "torchscript_onnx_qnn"].chipset == "Snapdragon® 8 Gen 2"


def test_entries_not_passed_are_reported_apart():
    data = yaml.safe_load(fixture_path("01").read_text(encoding="utf-8"))
    runtimes = data["precisions"]["float"]["components"]["LaMa-Dilated"]["performance_metrics"]["Samsung Galaxy S24"]
    runtimes["tflite"] = {"job_id": "jfailed01", "job_status": "Failed"}
    del runtimes["onnx"]["job_status"]

    parsed = parse_perf_yaml(yaml.safe_dump(data, sort_keys=False))
    assert len(parsed.passed) == 25
    assert [(r.job_id, r.job_status) for r in parsed.not_passed] == [("jfailed01", "Failed"), ("j5q22y145", None)]
    failed = parsed.not_passed[0]
    assert failed.inference_ms is failed.peak_memory_mib is failed.layers is None


@pytest.mark.parametrize(("text", "message"), [
    ("name: ci\non: [push]\njobs: {}\n", "is not an AI Hub perf.yaml"),
    ("- models\n- precisions\n", "is not an AI Hub perf.yaml"),
    ("", "is not an AI Hub perf.yaml"),
    ("precisions: [float]\n", "precisions is not a mapping"),
    ("precisions:\n  float:\n    components:\n      X:\n        performance_metrics:\n          S24: 3\n",
     "performance_metrics.S24 is not a mapping"),
    ("models:\n- name: X\n  performance_metrics:\n  - tflite: {inference_time: 1.0}\n",
     r"models\[0\].performance_metrics\[0\].reference_device_info is not a mapping"),
    ("models: {a: 1}\n", "models is not a list"),
    ("precisions: {float: [\n", "is not valid YAML"),
])
def test_not_a_perf_yaml_is_a_one_line_error(text, message):
    with pytest.raises(RbenchError, match=message) as caught:
        parse_perf_yaml(text, source="ci.yaml")
    assert str(caught.value).startswith("ci.yaml ")
    assert "\n" not in str(caught.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(RbenchError, match="perf.yaml not found"):
        read_perf_yaml(tmp_path / "perf.yaml")
