"""The ``ssh-trtexec`` runner against a real SSH server on 127.0.0.1 (``fake_jetson``): real ``ssh``/``scp``, real
trtexec logs replayed by a stand-in trtexec; builds, measurement, telemetry, failures, resume, and the CLI end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncssh
import pytest

from exporters import ExportRequest
from fake_jetson import FIXTURES, FakeJetson, ssh_config
from rethined_bench.artifact import check_parity
from rethined_bench.backends import create_exporter, local_runner, runner_for
from rethined_bench.devices import get_profile
from rethined_bench.measure.protocol import Protocol
from rethined_bench.runners.ssh import RemoteError
from rethined_bench.runners.ssh_trtexec import clock_warnings, parse_telemetry, thermal_warnings
from rethined_bench.store import ResultStore
from rethined_bench.sweep import Cell, Sweep

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"trtexec fixtures not found at {FIXTURES}")


@pytest.fixture(scope="module")
def jetson(tmp_path_factory):
    """The device, and the environment that points the jetson-nano profile at it (as a user would)."""
    root = tmp_path_factory.mktemp("jetson")
    client_key, host_key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    key_file = root / "id_ed25519"
    client_key.write_private_key(str(key_file))
    key_file.chmod(0o600)
    device = FakeJetson(root / "device")
    device.start(client_key, host_key)
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{device.port} {host_key.export_public_key().decode()}")
    config = ssh_config(root / "ssh_config", device, key_file, known_hosts)
    device.settings_env = {"RBENCH_JETSON_NANO_HOST": "nano", "RBENCH_JETSON_NANO_SSH_CONFIG": str(config),
                           "RBENCH_JETSON_NANO_REMOTE_DIR": str(device.remote_dir),
                           "RBENCH_JETSON_NANO_TRTEXEC": str(device.trtexec),
                           "RBENCH_JETSON_NANO_THERMAL_ZONES": f"{device.thermal}/thermal_zone*"}
    yield device
    device.stop()


@pytest.fixture
def nano(jetson, monkeypatch):
    """The jetson-nano profile with the device's settings; the device's fault switches reset after each test."""
    for key, value in jetson.settings_env.items():
        monkeypatch.setenv(key, value)
    yield get_profile("jetson-nano")
    for key in ("FAKE_BUILD_FAILS", "FAKE_RUN_SECONDS", "FAKE_GPU_HZ", "FAKE_TIME_DESERIALIZE", "FAKE_HEATS_TO"):
        jetson.env.pop(key, None)
    jetson.cool_down()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


def sweep(nano, tmp_path, artifacts, **protocol) -> Sweep:
    return Sweep(nano, ResultStore(tmp_path / "r.sqlite"), Protocol(**({"processes": 2, "min_iters": 4,
                                                                      "min_time_s": 0.0} | protocol)), artifacts)


CELL = Cell("rethined", "top1", 512)


def test_availability_probes_the_device_and_its_tensorrt(nano, monkeypatch):
    runner = runner_for(nano)
    assert runner.availability().ok and runner.toolchain() == "8.2.1"
    monkeypatch.setenv("RBENCH_JETSON_NANO_TENSORRT", "10")
    wrong = runner_for(get_profile("jetson-nano")).availability()
    assert not wrong.ok and wrong.reason == "nvidia@nano has TensorRT 8.2.1, the profile expects 10"
    monkeypatch.setenv("RBENCH_JETSON_NANO_TRTEXEC", "/opt/none/trtexec")
    missing = runner_for(get_profile("jetson-nano")).availability()
    assert not missing.ok and "trtexec not found at /opt/none/trtexec" in missing.reason


def test_an_unreachable_device_is_one_line(nano, monkeypatch, tmp_path):
    config = Path(os.environ["RBENCH_JETSON_NANO_SSH_CONFIG"]).read_text()
    closed = tmp_path / "ssh_config"
    closed.write_text(config.replace(f"Port {nano_port(config)}", "Port 9"))  # nothing listens on port 9
    monkeypatch.setenv("RBENCH_JETSON_NANO_SSH_CONFIG", str(closed))
    availability = runner_for(get_profile("jetson-nano")).availability()
    assert not availability.ok and availability.reason.startswith("ssh nvidia@nano: ")
    assert "\n" not in availability.reason and "refused" in availability.reason


def nano_port(config: str) -> str:
    return next(line.split()[1] for line in config.splitlines() if line.strip().startswith("Port"))


def test_a_cell_is_built_on_the_device_measured_from_exported_times_and_resumed(nano, jetson, tmp_path, artifacts):
    outcome = sweep(nano, tmp_path, artifacts).run_cell(CELL)
    assert outcome.status == "ok", outcome.detail
    result = outcome.result
    assert [len(s) for s in result.samples] == [4, 4]  # --iterations from the protocol, per fresh process
    assert result.latency["median"] == pytest.approx(89.0 + 0.277 + 0.008 + 1.0, abs=0.5)
    assert result.load["cold"] == pytest.approx(529.544)  # 8.2: 'Engine loaded in 0.529544 sec.' (read + deser.)
    assert result.settings["load_cold"].startswith("file read + runtime creation + deserialization")
    assert result.compile_ms > 0 and result.receipt["prepare"]["tensorrt"] == "8.2.1"
    assert result.receipt["prepare"]["trtexec_build_ms"] == pytest.approx(184708.0)  # the build log's own time
    build = result.receipt["prepare"]["command"]
    assert "--fp16" in build and "--saveEngine=" in build and "--onnx=" in build
    run = result.receipt["measure"]["commands"][0]
    assert "--loadEngine=" in run and "--iterations=4" in run and "--useSpinWait" in run and "--exportTimes=" in run
    telemetry = result.environment["device_reported"]["telemetry"][0]["before"]
    assert telemetry == {"power_mode": "MAXN", "gpu_mhz": {"min": 921.6, "max": 921.6, "current": 921.6},
                         "thermal_c": {"GPU-therm": 41.5}, "passive_trip_c": {"GPU-therm": 97.0}}
    assert result.load["warm"] is None and "no --timeDeserialize" in result.settings["load_warm"]  # TensorRT 8.2
    assert len(result.environment["device_reported"]["gpu_compute_ms"][1]) == 4
    assert not result.latency["unstable"]
    assert not list(jetson.remote_dir.glob("*.times.json"))  # per-run files removed from the device
    engines = list(jetson.remote_dir.glob("*.engine"))
    assert len(engines) == 1 and engines[0].name.endswith("-fp16-trt8.2.1.engine")

    builds = sum("--saveEngine" in c for c in jetson.commands)
    again = sweep(nano, tmp_path, artifacts)
    assert again.run_cell(CELL).status == "skipped"  # resume: stored for this artifact and protocol
    forced = Sweep(nano, again.store, again.protocol, artifacts, force=True).run_cell(CELL).result
    assert sum("--saveEngine" in c for c in jetson.commands) == builds  # the engine on the device was reused
    assert forced.compile_ms == result.compile_ms


def test_a_failed_build_is_a_failed_cell_with_the_error_lines(nano, jetson, tmp_path):
    jetson.env["FAKE_BUILD_FAILS"] = "1"
    outcome = sweep(nano, tmp_path, tmp_path / "artifacts").run_cell(Cell("rethined", "dense", 512))
    assert outcome.status == "failed"
    assert outcome.detail.startswith("prepare: trtexec could not build rethined_tensorrt-fp16_512x512.onnx")
    assert "Error[4]" in outcome.detail  # the log's own [E] line
    assert not list(jetson.remote_dir.glob("rethined_tensorrt*.engine"))


def test_a_dropped_connection_fails_the_cell_and_a_rerun_resumes(nano, jetson, tmp_path, artifacts):
    jetson.env["FAKE_RUN_SECONDS"] = "4"
    dropper = threading.Timer(1.5, jetson.drop_connections)
    dropper.start()
    outcome = sweep(nano, tmp_path, artifacts, processes=1).run_cell(CELL)
    dropper.join()
    assert outcome.status == "failed" and outcome.detail.startswith("measure: ssh nvidia@nano:")
    del jetson.env["FAKE_RUN_SECONDS"]
    assert sweep(nano, tmp_path, artifacts, processes=1).run_cell(CELL).status == "ok"


def test_a_remote_command_past_its_limit_is_a_timeout(nano, jetson, monkeypatch, tmp_path, artifacts):
    monkeypatch.setenv("RBENCH_JETSON_NANO_TIMEOUT_S", "2")
    jetson.env["FAKE_RUN_SECONDS"] = "6"
    outcome = sweep(nano, tmp_path, artifacts, processes=1).run_cell(CELL)
    assert outcome.status == "failed" and "timed out after 2 s" in outcome.detail


def test_a_gpu_clock_below_its_maximum_marks_the_cell_unstable(nano, jetson, tmp_path, artifacts):
    jetson.env["FAKE_GPU_HZ"] = "614400000"
    result = sweep(nano, tmp_path, artifacts, processes=1).run_cell(CELL).result
    assert result.latency["unstable"]
    assert any("GPU clock 614 MHz below its 922 MHz maximum" in r for r in result.latency["reasons"])


def test_a_gpu_heating_to_its_passive_trip_point_marks_the_cell_unstable(nano, jetson, tmp_path, artifacts):
    jetson.env["FAKE_HEATS_TO"] = "97500"
    result = sweep(nano, tmp_path, artifacts, processes=1).run_cell(CELL).result
    assert result.latency["unstable"]
    assert any("GPU-therm reached 97.5 °C, its passive trip point (97.0 °C" in r for r in result.latency["reasons"])


def test_warm_load_comes_from_time_deserialize_where_trtexec_has_it(nano, jetson, tmp_path, artifacts):
    jetson.env["FAKE_TIME_DESERIALIZE"] = "1"
    result = sweep(nano, tmp_path, artifacts, processes=2).run_cell(CELL).result
    assert result.load["warm"] == 595.0 and result.load["warm_per_process"] == [None, 595.0]
    assert result.load["cold"] == pytest.approx(529.544)
    assert result.environment["device_reported"]["deserialize_ms"] == {"first": 612.5, "average": 595.0, "runs": 20}
    assert result.receipt["measure"]["commands"][-1].endswith("--timeDeserialize")
    assert result.settings["load_warm"].startswith("trtexec --timeDeserialize")


def test_the_engine_runs_inputs_for_parity(nano, artifacts):
    from rethined_bench.inputs import make_inputs

    artifact = next(a for a in _artifacts(artifacts) if a.manifest["variant"] == "top1")
    runner = runner_for(nano)
    image, mask = make_inputs(512, 512, seed=0)
    inputs = {"image": image.numpy(), "mask": mask.numpy()}
    reference = local_runner("tensorrt").infer(local_runner("tensorrt").prepare(artifact), inputs)[0]
    result = check_parity(artifact, runner, inputs, reference)
    assert result["status"] == "ok" and result["max_abs_error"] < 1e-6 and result["runner"] == "ssh-trtexec"


def _artifacts(directory: Path) -> list:
    from rethined_bench.artifact import Artifact

    return [Artifact.load(m) for m in sorted(directory.glob("*.onnx.json"))]


def test_ctrl_c_stops_what_rbench_started_on_the_device(nano, jetson, monkeypatch):
    """Ctrl-C while trtexec runs on the device: rbench kills it there before it gives up."""
    jetson.env["FAKE_RUN_SECONDS"] = "30"
    jetson.remote_dir.mkdir(parents=True, exist_ok=True)
    (jetson.remote_dir / "x.engine").write_text("an engine")
    runner = runner_for(nano)
    ended: list[str] = []

    def run_trtexec() -> None:
        try:
            done = runner.remote.run(f"{jetson.trtexec} --loadEngine={jetson.remote_dir}/x.engine", timeout_s=60,
                                     check=False)
            ended.append(f"exit {done.returncode}")
        except RemoteError as exc:  # killed by a signal: ssh reports no exit status
            ended.append(str(exc))

    long_run = threading.Thread(target=run_trtexec)
    long_run.start()
    time.sleep(1.5)
    real_run = type(runner.remote).run

    def interrupted(self, command, **kwargs):
        if command == "the user presses Ctrl-C":
            raise KeyboardInterrupt
        return real_run(self, command, **kwargs)

    monkeypatch.setattr(type(runner.remote), "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner._remote("the user presses Ctrl-C")
    long_run.join(25)
    assert not long_run.is_alive() and ended and ended != ["exit 0"]  # the 30-second trtexec was killed there
    assert jetson.commands[-1].startswith("pkill -f -- '--(load|save)Engine=")


def test_telemetry_parsing_and_throttling_rules():
    text = ("== nvpmodel\nNV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n== clocks\n"
            "GPU MinFreq=76800000 MaxFreq=921600000 CurrentFreq=921600000\n== thermal\nGPU-therm 52500\n"
            "CPU-therm 48000\n")
    before = parse_telemetry(text)
    assert before == {"power_mode": "MAXN", "gpu_mhz": {"min": 76.8, "max": 921.6, "current": 921.6},
                      "thermal_c": {"GPU-therm": 52.5, "CPU-therm": 48.0}, "passive_trip_c": {}}
    after = parse_telemetry(text.replace("CurrentFreq=921600000", "CurrentFreq=768000000"))
    assert clock_warnings(0, before, after) == ["GPU clock fell from 922 to 768 MHz during process 1 (throttling)"]
    assert clock_warnings(0, before, before) == []
    assert parse_telemetry("== nvpmodel\nsh: nvpmodel: not found\n== clocks\n== thermal\n") == {
        "power_mode": None, "gpu_mhz": None, "thermal_c": {}, "passive_trip_c": {}}
    hot = parse_telemetry("== thermal\nGPU-therm 97500 97000 99000\nPMIC-Die 100000 95000\n")
    cool = parse_telemetry("== thermal\nGPU-therm 60000 97000 99000\nPMIC-Die 100000 95000\n")
    assert hot["passive_trip_c"] == {"GPU-therm": 97.0, "PMIC-Die": 95.0}
    assert thermal_warnings(2, cool, hot) == ["GPU-therm reached 97.5 °C, its passive trip point (97.0 °C, where "
                                              "the kernel throttles), during process 3"]
    assert thermal_warnings(0, hot, hot) == []  # a fixed reading above its trip point is not heating


def test_tensorrt_export_follows_the_device_opset(tmp_path):
    from conftest import export_here

    artifact = export_here(ExportRequest("rethined", 512, 512, "tensorrt", variant="top1", precision="fp16",
                                         options={"opset": 13, "tensorrt": "8.2"}), tmp_path, count_work=False)
    assert artifact.manifest["onnx"]["opset"] == 13 and artifact.manifest["onnx"]["exporter"].endswith("TorchScript")
    assert artifact.manifest["tensorrt"]["build_with"] == "8.2"
    assert artifact.manifest["tensorrt"]["build_flags"] == ["--fp16"]
    assert artifact.manifest["parity"]["status"] == "ok" and artifact.manifest["parity"]["runner"] == "local-ort"
    with pytest.raises(Exception, match="TensorRT 8.2's ONNX parser reads opset <= 13, not 18"):
        create_exporter("tensorrt").options(ExportRequest("rethined", 512, 512, "tensorrt",
                                                          options={"opset": 18, "tensorrt": "8.2"}))


def test_rbench_run_and_report_on_the_jetson_through_the_cli(nano, jetson, tmp_path):
    """The issue's done-when: a complete cell at 1024 through the CLI, and Table 2/3 with the paper's numbers."""
    env = os.environ | {"COLUMNS": "200"}
    run = [sys.executable, "-m", "rethined_bench.cli", "run", "--device", "jetson-nano", "--model", "rethined",
           "--variant", "dense", "--res", "1024", "--processes", "2", "--min-iters", "3", "--min-time", "0",
           "--db", "r.sqlite", "--artifacts", "art"]
    done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 ok" in done.stdout
    report = [sys.executable, "-m", "rethined_bench.cli", "report", "--device", "jetson-nano", "--format",
              "markdown", "--db", "r.sqlite", "--out", "reports"]
    subprocess.run(report, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=True)
    markdown = (tmp_path / "reports" / "jetson-nano.md").read_text()
    assert "1131.3" in markdown and "3010.4" in markdown  # the paper's Jetson Nano latency and load
    [row] = ResultStore(tmp_path / "r.sqlite").all()
    assert row.status == "ok" and row.latency["n"] == 6 and row.compile_ms > 0
    assert f"{row.latency['median']:.1f}" in markdown
    manifest = json.loads((tmp_path / "art" / "rethined_tensorrt-fp16_1024x1024.onnx.json").read_text())
    assert manifest["onnx"]["opset"] == 13 and manifest["tensorrt"]["build_with"] == "8.2"
    assert row.roofline["ceilings"]["fp16_gflops"] == 472 and row.roofline["floor_ms"] > 0
