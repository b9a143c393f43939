"""The runner architecture: a lazy registry, no import cycles between layers, and a new backend that plugs in as
an exporter module, a runner module, a profile and its registry lines, with nothing else changed.

The toy backend below stands in for TensorRT over SSH or Qualcomm AI Hub: its runner builds on a "device" (a
directory standing for the device's disk, reached through a subprocess as ``scp``/``trtexec`` would be) and times
itself there (a subprocess that reports its own samples and load time, as trtexec and AI Hub profile jobs do).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rethined_bench import backends, gate
from rethined_bench.devices import load_profiles
from rethined_bench.errors import RbenchError
from rethined_bench.measure.protocol import Protocol
from rethined_bench.provenance import imports_in
from rethined_bench.store import ResultStore
from rethined_bench.sweep import Cell, Sweep

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL_TOOLCHAINS = ("coremltools", "tensorrt", "tensorrt_lean", "cuda", "qai_hub")


# ------------------------------------------------------------------------------------------ lazy registry

BLOCKING_RBENCH = f"""
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL_TOOLCHAINS!r}:
            raise ImportError("blocked by the test: " + name)

sys.meta_path.insert(0, Block())
sys.argv = ["rbench", *sys.argv[1:]]
from rethined_bench.cli import main
try:
    main()
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {OPTIONAL_TOOLCHAINS!r})
    print("optional toolchains imported:", loaded)
"""


@pytest.mark.parametrize("command", ["devices", "doctor"])
def test_devices_and_doctor_work_when_every_optional_toolchain_fails_to_import(command):
    done = subprocess.run([sys.executable, "-c", BLOCKING_RBENCH, command], capture_output=True, text=True,
                          timeout=300, env=os.environ | {"COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "optional toolchains imported: []" in done.stdout
    assert "local-ort" in done.stdout and "local-coreml" in done.stdout


def test_registry_names_match_the_classes_and_import_on_demand():
    for name in backends.runner_names():
        assert backends.runner_class(name).name == name
    for target in backends.target_names():
        exporter = backends.exporter_class(target)
        assert exporter.target == target
        if exporter.local_runner:  # it executes this target's files (a TensorRT artifact is an .onnx, run by ORT)
            runs = backends.runner_class(exporter.local_runner).target
            assert backends.exporter_class(runs).suffix == exporter.suffix
    with pytest.raises(RbenchError, match="unknown runner 'telnet'"):
        backends.create_runner("telnet")
    with pytest.raises(RbenchError, match="invalid settings for runner local-ort"):
        backends.create_runner("local-ort", {"host": "x"})


# ------------------------------------------------------------------------------------------ layering

def _imports(path: Path) -> set[str]:
    """Every module a file imports, function bodies included, ``if TYPE_CHECKING:`` blocks excluded."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    kept, skip_below = [], None
    for line in path.read_text().splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_below is not None and line.strip() and indent <= skip_below:
            skip_below = None
        if skip_below is None:
            kept.append(line.lstrip())
        if line.strip().startswith("if TYPE_CHECKING:"):
            skip_below = indent
    found = set()
    for level, name, names in imports_in("\n".join(kept)):
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - level + 1]) if level else ""
        module = ".".join(p for p in (base, name) if p)
        found.add(module)
        found.update(f"{module}.{alias}" for alias in names)
    return found


@pytest.mark.parametrize("layer,forbidden", [
    ("exporters", ("rethined_bench.runners", "rethined_bench.backends", "rethined_bench.sweep")),
    ("rethined_bench/runners", ("exporters", "rethined_bench.backends", "rethined_bench.sweep")),
    ("rethined_bench/measure", ("exporters", "rethined_bench.runners", "rethined_bench.backends")),
    ("rethined_bench/artifact.py", ("exporters", "rethined_bench.runners", "rethined_bench.backends")),
])
def test_layers_do_not_import_each_other(layer, forbidden):
    files = [ROOT / layer] if layer.endswith(".py") else sorted((ROOT / layer).rglob("*.py"))
    offending = {f"{path.relative_to(ROOT)} imports {module}" for path in files for module in _imports(path)
                 if module.startswith(forbidden)}
    assert not offending


# ------------------------------------------------------------------------------------------ a new backend

TOY_EXPORTER = '''
"""The toy target: the ONNX export under another name (as --target tensorrt exports ONNX for the device)."""
from exporters.onnx import OnnxExporter


class ToyExporter(OnnxExporter):
    target = "toy"
    precisions = ("fp16",)
'''

TOY_RUNNER = '''
"""A remote-style runner: builds "on the device" and lets the device time itself."""
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rethined_bench.errors import RbenchError
from rethined_bench.measure.record import Measurement, ProcessRecord
from rethined_bench.runners.base import Availability, Build, Runner
from rethined_bench.runners.ort import create_session
from rethined_bench.settings import setting

DEVICE_TOOL = """
import json, sys, time
import numpy as np
from rethined_bench.runners.ort import create_session
path, iterations = sys.argv[1], int(sys.argv[2])
begin = time.perf_counter()
session = create_session(path, threads=1)
load = (time.perf_counter() - begin) * 1e3
inputs = {i.name: np.full(i.shape, 0.5, np.float32) for i in session.get_inputs()}
samples = []
for _ in range(iterations):
    begin = time.perf_counter()
    session.run(None, inputs)
    samples.append((time.perf_counter() - begin) * 1e3)
print(json.dumps({"load_ms": load, "samples_ms": samples}))
"""


@dataclass(frozen=True)
class ToySettings:
    host: str = setting("", help="the device")
    remote_dir: str = setting("", help="where builds go on the device")
    toy_sdk: str = setting("1.0", help="the device toolchain's version")


class ToyRunner(Runner):
    name = "toy-remote"
    target = "toy"
    settings_class = ToySettings

    def availability(self):
        return Availability(bool(self.settings.host), "no host configured", "set RBENCH_<DEVICE>_HOST")

    def toolchain(self):
        return f"toy-sdk {self.settings.toy_sdk}"

    def build(self, artifact):
        if self.settings.toy_sdk == "broken":
            raise RbenchError("toy-build exited with 1: [E] out of device memory while building the engine")
        remote = Path(self.settings.remote_dir) / f"{artifact.sha256[:16]}.engine"
        remote.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifact.path, remote)
        return Build(str(remote), {"command": f"toy-build --onnx {artifact.path.name} --save {remote.name}"})

    def measure(self, prepared, protocol):
        records, commands = [], []
        for _ in range(protocol.processes):
            command = [sys.executable, "-c", DEVICE_TOOL, prepared.handle, str(protocol.min_iters)]
            report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            records.append(ProcessRecord(report["samples_ms"], load_cold_ms=report["load_ms"]))
            commands.append(f"toy-run --load {Path(prepared.handle).name} --iterations {protocol.min_iters}")
        return Measurement(records, self.describe(), {"commands": commands, "host": self.settings.host},
                           {"thermal": "nominal"})

    def infer(self, prepared, inputs):
        return create_session(Path(prepared.handle)).run(None, inputs)

    def describe(self):
        return {"timer": "the device's own", "toolchain": self.toolchain()}
'''

TOY_PROFILE = '''
name = "toy-board"
display = "A board rbench reaches through a toy runner"
vendor = "toy"
target = "toy"
precision = "fp16"
runner = "toy-remote"
[connection]
host = "toy.local"
remote_dir = "{remote}"
[toolchain]
toy_sdk = "2.5"
onnx_opset = 17
[ceilings]
fp16_gflops = 1000
mem_gbps = 50
'''


@pytest.fixture
def toy_backend(tmp_path, monkeypatch):
    """The toy backend's two modules, its profile and its two registry lines: nothing else is touched."""
    package = tmp_path / "toy_backend"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "exporter.py").write_text(textwrap.dedent(TOY_EXPORTER))
    (package / "runner.py").write_text(textwrap.dedent(TOY_RUNNER))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] == "toy_backend"]:  # another test's copy
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(backends.EXPORTERS, "toy", "toy_backend.exporter:ToyExporter")
    monkeypatch.setitem(backends.RUNNERS, "toy-remote", "toy_backend.runner:ToyRunner")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "toy-board.toml").write_text(TOY_PROFILE.format(remote=tmp_path / "device"))
    return profiles


def test_a_new_backend_runs_a_sweep_through_the_shared_pipeline(toy_backend, tmp_path):
    profile = load_profiles(toy_backend)["toy-board"]
    store = ResultStore(tmp_path / "r.sqlite")
    sweep = Sweep(profile, store, Protocol(processes=2, min_iters=3), tmp_path / "artifacts")
    assert sweep.runner.settings.toy_sdk == "2.5" and sweep.export_options == {"opset": 17}

    outcome = sweep.run_cell(Cell("rethined", "top1", 512))
    assert outcome.status == "ok", outcome.detail
    result = outcome.result
    assert (result.runner, result.target, result.precision) == ("toy-remote", "toy", "fp16")
    assert len(result.samples) == 2 and all(len(s) == 3 for s in result.samples)
    assert result.load["cold"] > 0 and result.load["warm"] is None  # what the device reported, and only that
    assert result.compile_ms is not None and result.compile_ms >= 0
    assert result.receipt["prepare"]["command"].startswith("toy-build --onnx rethined-top1_toy-fp16_512x512")
    assert result.receipt["prepare"]["toolchain"] == "toy-sdk 2.5"
    assert result.receipt["measure"]["commands"][0].startswith("toy-run --load")
    assert result.environment["device_reported"] == {"thermal": "nominal"}
    assert result.roofline["bound"] in ("compute", "memory") and result.roofline["ceilings"]["mem_gbps"] == 50
    artifact = json.loads((tmp_path / "artifacts" / "rethined-top1_toy-fp16_512x512.onnx.json").read_text())
    assert artifact["onnx"]["opset"] == 17 and artifact["parity"]["runner"] == "local-ort"
    assert artifact["parity"]["status"] == "ok"

    again = Sweep(profile, store, Protocol(processes=2, min_iters=3), tmp_path / "artifacts", force=True)
    rerun = again.run_cell(Cell("rethined", "top1", 512)).result
    assert rerun.compile_ms == result.compile_ms and rerun.receipt["prepare"] == result.receipt["prepare"]  # cached

    unsupported = sweep.run_cell(Cell("migan", "crop", 512))
    assert unsupported.status == "unsupported" and "crops around the hole" in unsupported.detail
    assert not list((tmp_path / "artifacts").glob("migan*"))  # declared impossible: nothing was exported

    pairs, unmatched = gate.match_artifacts(tmp_path / "artifacts", tmp_path / "artifacts")
    assert unmatched == [] and gate.structural_facts(pairs[0].baseline.manifest)["nodes"] > 0  # the toy's graph


def test_a_new_backend_profile_is_validated_against_its_settings(toy_backend):
    profile = toy_backend / "toy-board.toml"
    profile.write_text(profile.read_text().replace("remote_dir", "remote_path"))
    with pytest.raises(RbenchError, match="unknown key 'connection.remote_path' for runner toy-remote"):
        load_profiles(toy_backend)


TOY_LOCAL = '''
"""A local runner whose worker dies or hangs, as a crashing driver or a deadlocked runtime does."""
import os
import time
from dataclasses import dataclass

from rethined_bench.runners.base import Availability, LocalRunner
from rethined_bench.settings import setting


@dataclass(frozen=True)
class FaultSettings:
    fault: str = setting("die")


class FaultyRunner(LocalRunner):
    name = "faulty"
    target = "onnx"
    settings_class = FaultSettings

    def availability(self):
        return Availability(True)

    def describe(self):
        return {}

    def load(self, prepared):
        if self.settings.fault == "die":
            os._exit(7)
        time.sleep(120)
'''

LAUNCHER = """
import sys
from rethined_bench import backends
backends.EXPORTERS["toy"] = "toy_backend.exporter:ToyExporter"
backends.RUNNERS["toy-remote"] = "toy_backend.runner:ToyRunner"
from rethined_bench.cli import main
sys.argv = ["rbench", *sys.argv[1:]]
main()
"""


def test_rbench_run_exits_1_and_lists_the_cells_that_failed(toy_backend, tmp_path):
    """A device build that fails (as a TensorRT engine build can) is stored as failed and fails the command."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
                        "RBENCH_TOY_BOARD_TOY_SDK": "broken", "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", LAUNCHER, "run", "--device", "toy-board", "--profiles",
                           str(toy_backend), "--model", "rethined", "--variant", "top1", "--res", "512", "--db",
                           "r.sqlite", "--artifacts", "art"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 of 1 cells failed:" in done.stderr
    assert "rethined/top1 @512: prepare: toy-build exited with 1: [E] out of device memory" in done.stderr
    [row] = ResultStore(tmp_path / "r.sqlite").all()
    assert row.status == "failed" and row.reason.startswith("prepare: toy-build exited with 1")


@pytest.mark.parametrize("fault,message", [("die", "worker exited with 7"), ("hang", "worker timed out after 3 s")])
def test_a_worker_that_dies_or_hangs_is_a_cell_error(tmp_path, monkeypatch, fault, message):
    from rethined_bench.artifact import Artifact, manifest_path_for
    from rethined_bench.runners import Prepared
    from rethined_bench.runners.local import CellError, run_worker

    package = tmp_path / "faulty_backend"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "local.py").write_text(textwrap.dedent(TOY_LOCAL))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the worker is a fresh interpreter
    from faulty_backend.local import FaultSettings, FaultyRunner

    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model: the runner never gets that far")
    manifest = {"sha256": "0" * 64, "resolution": [64, 64], "target": "onnx", "precision": "fp32"}
    manifest_path_for(path).write_text(json.dumps(manifest))
    prepared = Prepared(Artifact(path, manifest), str(path))
    with pytest.raises(CellError, match=message):
        run_worker(FaultyRunner(FaultSettings(fault)), prepared, Protocol(processes=1), timeout_s=3)


# ------------------------------------------------------------------------------------------ identity

def test_an_artifact_identity_covers_its_model_and_target_not_the_whole_package():
    """Editing CoordFill must not invalidate RETHINED's artifacts (or its cloud compiles), nor Core ML's ONNX."""
    from exporters import ExportRequest
    from rethined_bench.provenance import module_closure

    def files(*modules: str) -> set[str]:
        return {str(p.relative_to(ROOT)) for p in module_closure(*modules)}

    coordfill = files("rethined_bench.models.coordfill")
    assert "rethined_bench/models/layers/dft.py" in coordfill and "rethined_bench/models/coordfill.py" in coordfill
    assert not {"rethined_bench/models/rethined.py", "rethined_bench/models/migan.py"} & coordfill
    onnx = files("exporters.onnx")
    assert {"exporters/base.py", "rethined_bench/artifact.py", "rethined_bench/optimize/fuse_bn.py"} <= onnx
    assert "exporters/coreml.py" not in onnx and not any(f.startswith("rethined_bench/runners") for f in onnx)

    def code(model: str, target: str) -> str:
        return ExportRequest(model, 1024, 1024, target).identity(f"exporters.{target}")["code"]

    assert len({code("rethined", "onnx"), code("coordfill", "onnx"), code("rethined", "coreml")}) == 3
    assert code("rethined", "onnx") == code("rethined", "onnx")
