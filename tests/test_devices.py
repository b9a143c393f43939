"""Device profiles: the built-in ones are valid; mistakes name the file and the key; user profiles override."""

from __future__ import annotations

import pytest

from rethined_bench.backends import export_options, runner_for
from rethined_bench.devices import get_profile, load_profiles
from rethined_bench.errors import RbenchError
from rethined_bench.runners.ort import OrtSettings

PAPER_DEVICES = ["iphone-xs", "ipad-pro-m2", "ipad-8th-gen-a12", "snapdragon-888", "jetson-nano"]

VALID = """
name = "my-board"
display = "My board"
vendor = "host"
target = "onnx"
precision = "fp32"
runner = "local-ort"
[toolchain]
os = "Linux"
onnx_opset = 18
threads = 2
graph_opt_level = "all"
[ceilings]
fp32_gflops = 100
mem_gbps = 10.5
"""


def test_builtin_profiles_cover_the_paper_devices_and_hosts():
    profiles = load_profiles()
    assert set(PAPER_DEVICES + ["host-cpu", "host-cuda"]) <= set(profiles)
    assert profiles["jetson-nano"].toolchain["onnx_opset"] == 13
    assert profiles["jetson-nano"].ceilings["fp16_gflops"] == 472
    assert profiles["ipad-pro-m2"].paper_table2["rethined"] == {"latency": 17.59, "load": 84.48}
    assert "coordfill" not in profiles["snapdragon-888"].paper_table2  # "-" in the paper
    for name in PAPER_DEVICES:
        assert profiles[name].ceilings.get("source"), name


def test_builtin_profiles_fill_their_backends_settings():
    profiles = load_profiles()
    assert export_options(profiles["host-cpu"]) == {"opset": 18}
    assert runner_for(profiles["host-cpu"]).settings == OrtSettings(threads=None, graph_opt_level="all")
    assert export_options(profiles["ipad-pro-m2"]) == {"deployment_target": "iOS17", "compute_units": "ALL"}
    assert runner_for(profiles["ipad-pro-m2"]).settings.compute_units == "ALL"
    assert export_options(profiles["snapdragon-888"]) == {"opset": 17, "runtime": "qnn_dlc", "qairt": "2.42",
                                                           "compute_unit": "npu"}
    assert export_options(profiles["jetson-nano"]) == {"opset": 13, "tensorrt": "8.2"}
    assert runner_for(profiles["jetson-nano"]).settings.remote_dir == "/tmp/rbench"


@pytest.mark.parametrize("edit,message", [
    (lambda t: t + "colour = 'red'\n", "unknown key 'ceilings.colour'"),
    (lambda t: t.replace("mem_gbps = 10.5", "mem_gbps = 'fast'"), "'ceilings.mem_gbps' must be int or float"),
    (lambda t: t.replace('runner = "local-ort"', 'runner = "telnet"'), "'runner' is 'telnet'"),
    (lambda t: t.replace('precision = "fp32"\n', ""), "missing required key 'precision'"),
    (lambda t: t + "[gpu]\nx = 1\n", "unknown section [gpu]"),
    (lambda t: t.replace("threads = 2", "threads = '2'"), "'toolchain.threads' must be int"),
    (lambda t: t.replace("threads = 2", "thread = 2"), "unknown key 'toolchain.thread' for runner local-ort"),
    (lambda t: t.replace("onnx_opset = 18", "onnx_opset = 17.5"), "'toolchain.onnx_opset' must be int"),
    (lambda t: t + "[connection]\nhost = 'board.local'\n", "unknown key 'connection.host'"),
    (lambda t: t.replace('"all"', '"max"'), "graph_opt_level must be one of"),
    (lambda t: t.replace('precision = "fp32"', 'precision = "int8"'), "target onnx supports fp32, fp16"),
    (lambda t: t.replace('runner = "local-ort"', 'runner = "local-coreml"'),
     "runner local-coreml runs coreml artifacts, not onnx"),
])
def test_invalid_profiles_name_the_file_and_the_key(tmp_path, edit, message):
    path = tmp_path / "my-board.toml"
    path.write_text(edit(VALID))
    with pytest.raises(RbenchError) as info:
        load_profiles(tmp_path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_user_profiles_come_from_a_directory_or_the_environment(tmp_path, monkeypatch):
    (tmp_path / "my-board.toml").write_text(VALID)
    assert get_profile("my-board", tmp_path).toolchain["threads"] == 2
    monkeypatch.setenv("RBENCH_PROFILES", str(tmp_path))
    profile = get_profile("my-board")
    assert runner_for(profile).settings.threads == 2 and export_options(profile) == {"opset": 18}


def test_environment_variables_override_profile_settings(tmp_path, monkeypatch):
    (tmp_path / "my-board.toml").write_text(VALID)
    profile = get_profile("my-board", tmp_path)
    monkeypatch.setenv("RBENCH_MY_BOARD_THREADS", "3")
    monkeypatch.setenv("RBENCH_MY_BOARD_ONNX_OPSET", "13")
    assert runner_for(profile).settings.threads == 3 and runner_for(profile).device == "my-board"
    assert export_options(profile) == {"opset": 13}
    monkeypatch.setenv("RBENCH_MY_BOARD_THREADS", "many")
    with pytest.raises(RbenchError, match="RBENCH_MY_BOARD_THREADS must be int, not 'many'"):
        runner_for(profile)


def test_unknown_device_lists_the_choices():
    with pytest.raises(RbenchError, match="unknown device 'pixel-9'.*host-cpu"):
        get_profile("pixel-9")
