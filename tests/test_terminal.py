"""The CLI read in an 80-column terminal (CI logs): listings keep one line per row, long text goes to notes and
detail views, ``--json`` is the same data for scripts, and a sweep's progress bar names each cell's phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import rethined_bench as rb
from rethined_bench.devices import get_profile
from rethined_bench.measure import roofline
from rethined_bench.measure.protocol import Protocol
from rethined_bench.store import ResultStore
from rethined_bench.sweep import PHASES, Cell, Sweep

WIDTH = 80
FAKE_CEILINGS = {"fp32_gflops": 100.0, "mem_gbps": 10.0, "threads": 1, "method": "test stand-in"}


def rbench(*args: str, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``rbench ARGS`` as a subprocess in an 80-column terminal, without any AI Hub credentials."""
    environment = {k: v for k, v in os.environ.items() if k != "QAI_HUB_API_TOKEN" and not k.startswith("RBENCH_")}
    environment |= {"COLUMNS": str(WIDTH), "QAIHUB_CLIENT_INI": "/nonexistent/qai_hub/client.ini", **(env or {})}
    done = subprocess.run([sys.executable, "-m", "rethined_bench.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def as_json(*args: str, **kwargs) -> object:
    """``rbench ARGS --json``: stdout must be the JSON document and nothing else."""
    return json.loads(rbench(*args, "--json", **kwargs).stdout)


def assert_fits(text: str) -> list[str]:
    lines = text.splitlines()
    too_wide = [line for line in lines if len(line) > WIDTH]
    assert not too_wide, "\n".join(too_wide)
    return lines


def row_of(lines: list[str], name: str) -> str:
    """The one line whose first word is ``name``."""
    found = [line for line in lines if line.split()[:1] == [name]]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def flat(text: str) -> str:
    """Text with every run of whitespace as one space: wrapped paragraphs compare as written."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def models_json():
    return as_json("models")


@pytest.fixture(scope="module")
def devices_json():
    return as_json("devices")


def test_models_listing_keeps_each_model_on_one_line(models_json):
    lines = assert_fits(rbench("models").stdout)
    assert [m["name"] for m in models_json] == rb.list_models()
    for model in models_json:
        assert set(model) == {"name", "summary", "source", "default_variant", "variants", "params",
                              "paper_params_millions", "resolutions"}
        assert model["source"] == "built-in"
        row = row_of(lines, model["name"])
        assert f"{model['params']:,}" in row
        assert f"paper {model['paper_params_millions']}M" in row if model["paper_params_millions"] else "built-in" in row
        assert all(variant["name"] in row for variant in model["variants"])
        assert f"×{model['resolutions']['multiple_of']} ≥{model['resolutions']['minimum']}" in row
    assert "rbench models NAME" in lines[-1]


def test_model_detail_shows_variants_resolutions_limits_and_paper():
    out = rbench("models", "migan").stdout
    assert_fits(out)
    text = flat(out)
    assert "resize 5,973,366 yes mode=resize" in text and "crop 5,973,366 no mode=crop" in text
    assert "multiple of 512, ≥512 (MI-GAN runs at 512x512" in text
    assert "crop on coreml, onnx, qnn, tensorrt MI-GAN variant 'crop' crops around the hole" in text
    assert "5.95M (Table 3)" in text and "snapdragon-888 686.17 122.3" in text

    info = as_json("models", "migan")
    assert info["default_variant"] == "resize" and info["resolutions"]["multiple_of"] == 512
    assert [(v["name"], v["benchmarked"], v["params"]) for v in info["variants"]] == [
        ("resize", True, 5_973_366), ("crop", False, 5_973_366)]
    assert [(limit["variant"], limit["targets"]) for limit in info["limits"]] == [
        ("crop", ["coreml", "onnx", "qnn", "tensorrt"])]
    assert info["paper"]["table3"]["params"] == 5.95


def test_devices_listing_keeps_each_device_on_one_line(devices_json):
    lines = assert_fits(rbench("devices").stdout)
    assert {"host-cpu", "jetson-nano", "snapdragon-888", "ipad-pro-m2"} <= {d["name"] for d in devices_json}
    for device in devices_json:
        assert set(device) == {"name", "display", "vendor", "runner", "target", "precision", "availability"}
        assert set(device["availability"]) == {"ok", "reason", "fix"}
        row = row_of(lines, device["name"])
        assert device["runner"] in row and f"{device['target']} {device['precision']}" in row
        reachable = row.split(f"{device['target']} {device['precision']}", 1)[1].strip()
        if device["availability"]["ok"]:
            assert reachable == "yes"
        else:
            assert reachable.startswith("no: ")
    host = next(d for d in devices_json if d["name"] == "host-cpu")
    assert host["availability"]["ok"] and host["runner"] == "local-ort"


def test_doctor_keeps_rows_on_one_line_and_every_fix_below(devices_json):
    out = rbench("doctor").stdout
    lines = assert_fits(out)
    rows = as_json("doctor")
    assert {row["device"] for row in rows} == {device["name"] for device in devices_json}
    for row in rows:
        assert set(row) == {"runner", "device", "availability"}
        line = next(line for line in lines if line.split()[:2] == [row["runner"], row["device"]])
        assert line.split()[2] == ("yes" if row["availability"]["ok"] else "no")
        if row["availability"]["fix"]:  # the useful part: in full in the numbered notes, however it wraps
            assert flat(row["availability"]["fix"]) in flat(out)
    jetson = next(row for row in rows if row["device"] == "jetson-nano")
    assert not jetson["availability"]["ok"] and "1. " in out and "fix: set RBENCH_JETSON_NANO_HOST" in flat(out)


def test_device_detail_shows_settings_with_their_sources():
    env = {"RBENCH_JETSON_NANO_PORT": "2222"}  # an override; no host, so nothing is contacted
    out = rbench("devices", "jetson-nano", env=env).stdout
    text = flat(out)
    assert_fits(out)
    for expected in ("display NVIDIA Jetson Nano (4 GB)", "target tensorrt fp16", "runner ssh-trtexec",
                     "reachable no: no host configured", "fix set RBENCH_JETSON_NANO_HOST",
                     'user "nvidia" [connection] · runner', "port 2222 RBENCH_JETSON_NANO_PORT · runner",
                     'key_file "" default · runner', 'tensorrt "8.2" [toolchain] · runner, exporter',
                     "onnx_opset 13 [toolchain] · exporter", "fp16 GFLOP/s 472", "128 CUDA cores",
                     "rethined 1131.3 3010.4", "facts jetpack 4.6, cuda 10.2"):
        assert expected in text, expected

    info = as_json("devices", "jetson-nano", env=env)
    assert {"name", "runner", "availability", "profile", "settings", "ceilings", "paper_table2"} <= set(info)
    settings = {row["key"]: row for row in info["settings"]}
    assert (settings["port"]["value"], settings["port"]["source"]) == (2222, "environment")
    assert (settings["host"]["source"], settings["host"]["env"]) == ("connection", "RBENCH_JETSON_NANO_HOST")
    keep = settings["keep_remote"]
    assert set(keep) == {"key", "value", "source", "env", "used_by", "help"} and keep["help"]
    assert (keep["value"], keep["source"], keep["env"]) == (False, "default", "RBENCH_JETSON_NANO_KEEP_REMOTE")
    assert settings["onnx_opset"]["used_by"] == ["exporter"] and settings["tensorrt"]["used_by"] == ["runner",
                                                                                                    "exporter"]
    assert info["ceilings"]["fp16_gflops"] == 472 and info["paper_table2"]["rethined"]["latency"] == 1131.3
    assert info["availability"]["reason"] == "no host configured"


@pytest.mark.parametrize("args,message", [(["devices", "pixel-9"], "unknown device 'pixel-9'"),
                                          (["models", "lama-xl"], "unknown model 'lama-xl'")])
def test_an_unknown_name_is_one_line(args, message):
    done = subprocess.run([sys.executable, "-m", "rethined_bench.cli", *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert message in done.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory whose host ceilings are already cached (the real measurement multiplies 4096² matrices)."""
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(roofline, "measure_host_ceilings", lambda: FAKE_CEILINGS)
        roofline.host_ceilings(root)
    return root


def test_the_phase_callback_hears_export_build_measure_in_order(workdir):
    heard: list[tuple[Cell, str]] = []
    sweep = Sweep(get_profile("host-cpu"), ResultStore(workdir / "r.sqlite"),
                  Protocol(processes=1, warmup=0, min_iters=1, min_time_s=0), workdir / "art",
                  on_phase=lambda cell, phase: heard.append((cell, phase)))
    cell = Cell("rethined", "top1", 512)
    assert sweep.run_cell(cell).status == "ok"
    assert heard == [(cell, "export"), (cell, "build"), (cell, "measure")]
    assert all(phase in PHASES for _, phase in heard)

    heard.clear()
    assert sweep.run_cell(cell).status == "skipped"  # already stored: nothing past the export's cache check
    unsupported = Cell("migan", "crop", 512)
    assert sweep.run_cell(unsupported).status == "unsupported"
    assert heard == [(cell, "export"), (unsupported, "export")]


def test_a_sweep_shows_each_cell_and_its_phase_in_80_columns(workdir):
    """The per-cell line and the summary are as before; the bar names the cell and its phase, with an ETA."""
    done = rbench("run", "--model", "rethined", "--variant", "top1", "--res", "512", "--processes", "1",
                  "--warmup", "0", "--min-iters", "1", "--min-time", "0", "--db", "cli.sqlite", "--artifacts", "art",
                  cwd=workdir)
    lines = assert_fits(done.stdout)
    assert any(line.lstrip().startswith("ok rethined/top1 @512: ") for line in lines)
    assert lines[-1] == "1 ok; results in cli.sqlite"
    bar = next(line for line in lines if line.startswith("rethined/top1 @512 · "))
    assert bar.split()[3] == "measure" and "1/1" in bar and bar.count(":") >= 4  # elapsed and remaining clocks
