"""Device profiles: the built-in ones are valid; mistakes name the file and the key; user profiles override."""

from __future__ import annotations

import pytest

from rethined_bench.devices import get_profile, load_profiles
from rethined_bench.errors import RbenchError

PAPER_DEVICES = ["iphone-xs", "ipad-pro-m2", "ipad-8th-gen-a12", "snapdragon-888", "jetson-nano"]

VALID = """
name = "my-board"
display = "My board"
vendor = "nvidia"
target = "tensorrt"
precision = "fp16"
runner = "ssh-trtexec"
[connection]
host = "board.local"
[ceilings]
fp16_gflops = 100
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


@pytest.mark.parametrize("edit,message", [
    (lambda t: t + "colour = 'red'\n", "unknown key 'ceilings.colour'"),
    (lambda t: t.replace("mem_gbps = 10.5", "mem_gbps = 'fast'"), "'ceilings.mem_gbps' must be int or float"),
    (lambda t: t.replace('runner = "ssh-trtexec"', 'runner = "telnet"'), "'runner' is 'telnet'"),
    (lambda t: t.replace('precision = "fp16"\n', ""), "missing required key 'precision'"),
    (lambda t: t + "[gpu]\nx = 1\n", "unknown section [gpu]"),
    (lambda t: t.replace("[connection]", "[connection]\nport = '22'"), "'connection.port' must be int"),
])
def test_invalid_profiles_name_the_file_and_the_key(tmp_path, edit, message):
    path = tmp_path / "my-board.toml"
    path.write_text(edit(VALID))
    with pytest.raises(RbenchError) as info:
        load_profiles(tmp_path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_user_profiles_come_from_a_directory_or_the_environment(tmp_path, monkeypatch):
    (tmp_path / "my-board.toml").write_text(VALID)
    assert get_profile("my-board", tmp_path).connection["host"] == "board.local"
    monkeypatch.setenv("RBENCH_PROFILES", str(tmp_path))
    profile = get_profile("my-board")
    monkeypatch.setenv("RBENCH_MY_BOARD_HOST", "10.0.0.9")
    assert profile.connection_value("host") == "10.0.0.9"


def test_unknown_device_lists_the_choices():
    with pytest.raises(RbenchError, match="unknown device 'pixel-9'.*host-cpu"):
        get_profile("pixel-9")
