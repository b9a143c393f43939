"""Core ML target and runner: conversion per model, the structural checks (with planted violations), the fp16
emulation, the multifunction bundle, and the runner's load/predict logic behind a fake coremltools boundary.

Conversion and inspection run on Linux; prediction needs macOS (the ``macos`` test, deselected elsewhere).
Real models are converted once per module (1024 by default; 2048 and 4096 with ``-m slow``); everything else uses
tiny modules that convert in a second or two.
"""

from __future__ import annotations

import enum
import itertools
import json
import platform
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rethined_bench
from conftest import export_here
from exporters import ExportRequest
from exporters.coreml import (
    CoreMLConversionError,
    CoreMLExporter,
    CoreMLValidationError,
    Expectation,
    bundle_resolutions,
    convert_to_mlpackage,
    fp16_error_bound,
    fp16_range_violations,
    io_violations,
    load_program,
    opset_violations,
    precision_violations,
    spec_version_violations,
    validate_package,
)
from rethined_bench.artifact import Artifact, check_parity, size_of
from rethined_bench.backends import create_runner
from rethined_bench.errors import RbenchError
from rethined_bench.measure import memory
from rethined_bench.measure.protocol import Protocol, measure_process
from rethined_bench.models import list_models
from rethined_bench.runners import coreml as coreml_runner
from rethined_bench.runners import Prepared
from rethined_bench.runners.coreml import CoreMLRunner, CoreMLRunnerSettings
from rethined_bench.toolchains import COREML_COMPUTE_UNITS as COMPUTE_UNITS

MODELS = ["rethined", "migan", "coordfill"]
# ops each program must hold; RETHINED's pixel_(un)shuffle stay native only with run_decompositions({}) (§1.1)
SIGNATURE_OPS = {"rethined": {"conv", "softmax", "pixel_unshuffle", "pixel_shuffle"}, "migan": {"conv"},
                 "coordfill": {"conv"}}


def needs_coremltools() -> Any:
    return pytest.importorskip("coremltools", reason="the coreml extra is not installed")


def export_model(model: str, resolution: int, out_dir: Path, precision: str = "fp16") -> Artifact:
    if model not in list_models():
        pytest.skip(f"model {model} is not registered yet")
    needs_coremltools()
    request = ExportRequest(model, resolution, resolution, "coreml", precision=precision)
    return export_here(request, out_dir, reuse=False)


@pytest.fixture(scope="module", params=MODELS)
def exported_1024(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return export_model(request.param, 1024, tmp_path_factory.mktemp(f"coreml-{request.param}"))


def check_artifact(artifact: Artifact, resolution: int) -> None:
    """What every fp16 export must show: the declared I/O, an fp16 program, the target, the fp16 bound."""
    manifest, coreml = artifact.manifest, artifact.manifest["coreml"]
    assert artifact.path.name == f"{manifest['model']}_coreml-fp16_{resolution}x{resolution}.mlpackage"
    assert (coreml["deployment_target"], coreml["spec_version"], coreml["opset"]) == ("iOS16", 7, "CoreML6")
    assert (coreml["compute_precision"], coreml["compute_units"]) == ("fp16", "ALL")
    assert coreml["ops_by_dtype"]["fp32"] == 1  # the output cast, and nothing else
    assert set(coreml["ops_by_dtype"]) <= {"fp16", "fp32", "int32", "bool"}
    assert SIGNATURE_OPS[manifest["model"]] <= set(coreml["ops"])
    assert coreml["package_bytes"]["total"] == manifest["size_bytes"] > coreml["package_bytes"]["weights"] > 0
    graph = manifest["graph"]  # the target-neutral summary the gate compares
    assert (graph["format"], graph["ops"], graph["node_count"]) == ("mlprogram", coreml["ops"], coreml["op_count"])
    assert graph["weight_bytes"] == coreml["const_bytes_by_dtype"] and graph["weight_bytes"]["fp16"] > 0
    spec, program = load_program(artifact.path)
    shape = (1, 3, resolution, resolution)
    assert io_violations(spec, {"image": shape, "mask": (1, 1, resolution, resolution)}, {"inpainted": shape}) == []
    assert precision_violations(program, "fp16") == [] and fp16_range_violations(program) == []
    bound = manifest["fp16_error_bound"]
    assert 0 < bound["max_abs_error"] < 2e-2 and bound["psnr_db"] > 40
    assert bound["max_abs_activation"] <= 65504
    if platform.system() != "Darwin":
        assert manifest["parity"]["status"] == "not run"


def test_export_1024(exported_1024: Artifact) -> None:
    check_artifact(exported_1024, 1024)
    on_disk = json.loads(exported_1024.manifest_path.read_text())
    assert on_disk["coreml"]["ops"] == exported_1024.manifest["coreml"]["ops"]


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [2048, 4096])
@pytest.mark.parametrize("model", MODELS)
def test_export_large(model: str, resolution: int, tmp_path: Path) -> None:
    check_artifact(export_model(model, resolution, tmp_path), resolution)


# -------------------------------------------------------------------------------- tiny modules for fast checks

class TinyPipeline(nn.Module):
    """image, mask → inpainted with pixel_(un)shuffle (iOS16+) and an optional constant added to the mask."""

    def __init__(self, mask_bias: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 12, 3, padding=1)
        self.mask_bias = mask_bias

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(torch.cat([image, mask * (1.0 + self.mask_bias)], dim=1), 2)
        filled = F.pixel_shuffle(self.conv(x), 2).sigmoid()
        return image * (1.0 - mask) + filled * mask


def tiny_example(side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, side, side, generator=generator)
    return image, (torch.rand(1, 1, side, side, generator=generator) > 0.7).float()


def tiny_model() -> TinyPipeline:
    torch.manual_seed(0)
    return TinyPipeline().eval()


def tiny_expectation(side: int = 32, precision: str = "fp16", target: str = "iOS16") -> Expectation:
    shape = (1, 3, side, side)
    return Expectation({"image": shape, "mask": (1, 1, side, side)}, {"inpainted": shape}, precision, target)


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    needs_coremltools()
    path = tmp_path_factory.mktemp("tiny") / "tiny.mlpackage"
    convert_to_mlpackage(tiny_model(), tiny_example(), path, deployment_target="iOS16", precision="fp16")
    return path


def mil_builder() -> tuple[Any, Any, Any]:
    ct = needs_coremltools()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    return ct, mb, types


# -------------------------------------------------------------------------------- structural checks

def test_tiny_package_passes_every_check(tiny_package: Path) -> None:
    statistics = validate_package(tiny_package, tiny_expectation())
    assert statistics["ops_by_dtype"] == {"fp16": statistics["op_count"] - 1, "fp32": 1}
    assert statistics["ops"]["cast"] == 3  # two fp32 inputs → fp16, fp16 → fp32 output


def test_io_check_catches_renamed_and_reshaped_outputs(tiny_package: Path) -> None:
    spec, _ = load_program(tiny_package)
    shape = (1, 3, 32, 32)
    inputs = {"image": shape, "mask": (1, 1, 32, 32)}
    assert io_violations(spec, inputs, {"inpainted": shape}) == []
    assert io_violations(spec, inputs, {"output": shape}) == ["outputs are ['inpainted'], declared ['output']"]
    assert io_violations(spec, inputs, {"inpainted": (1, 3, 64, 64)}) == [
        "output inpainted has shape (1, 3, 32, 32), declared (1, 3, 64, 64)"]
    spec.description.input[1].type.multiArrayType.dataType = 65552  # FLOAT16
    assert io_violations(spec, inputs, {"inpainted": shape}) == ["input mask is FLOAT16, declared FLOAT32"]
    spec.description.input[1].type.multiArrayType.dataType = 65568  # back to FLOAT32
    spec.description.input[0].type.multiArrayType.enumeratedShapes.shapes.add().shape.extend(shape)
    assert io_violations(spec, inputs, {"inpainted": shape}) == [
        "input image has a flexible shape (enumeratedShapes)"]


def test_precision_check_catches_a_planted_fp32_island() -> None:
    ct, mb, types = mil_builder()

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8), dtype=types.fp32)], opset_version=ct.target.iOS16)
    def program(x):
        h = mb.relu(x=mb.cast(x=x, dtype="fp16"), name="relu16")
        f = mb.sigmoid(x=mb.cast(x=h, dtype="fp32", name="to32"), name="sigmoid32")  # the island
        return mb.cast(x=mb.cast(x=f, dtype="fp16"), dtype="fp32")

    assert precision_violations(program, "fp16") == ["op to32 (cast) computes in fp32, not fp16",
                                                      "op sigmoid32 (sigmoid) computes in fp32, not fp16"]
    assert "op relu16 (relu) computes in fp16, not fp32" in precision_violations(program, "fp32")


def test_opset_check_catches_a_planted_unsupported_op() -> None:
    ct, mb, types = mil_builder()

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8, 8), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def program(x):
        return mb.relu(x=mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)))

    assert opset_violations(program, "iOS16") == []
    assert opset_violations(program, "iOS15") == ["op pixel_unshuffle (x1) is not in the iOS15 opset"]
    assert spec_version_violations(7, "iOS16") == []
    assert spec_version_violations(8, "iOS16") == ["spec version 8 is newer than iOS16 (spec version 7) can load"]


def test_fp16_range_check_catches_planted_constants() -> None:
    ct, mb, types = mil_builder()

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4), dtype=types.fp32)], opset_version=ct.target.iOS16)
    def program(x):
        shifted = mb.add(x=x, y=np.array([1e5, 0, 0, 0], dtype=np.float32), name="add_big")
        masked = mb.mul(x=shifted, y=np.float32(-np.inf), name="mul_inf")
        return mb.mul(x=masked, y=np.float32(65504.0), name="mul_edge")  # exactly fp16's max: fine

    violations = fp16_range_violations(program)
    assert len(violations) == 2
    assert "add_big" in violations[0] and "100000" in violations[0] and "65504" in violations[0]
    assert "mul_inf" in violations[1] and "non-finite" in violations[1]


def test_export_fails_on_a_mask_constant_beyond_fp16(tmp_path: Path) -> None:
    needs_coremltools()
    path = tmp_path / "big.mlpackage"
    convert_to_mlpackage(TinyPipeline(mask_bias=1e8).eval(), tiny_example(), path, deployment_target="iOS16",
                         precision="fp16")
    with pytest.raises(CoreMLValidationError, match=r"beyond fp16's ±65504"):
        validate_package(path, tiny_expectation())
    # the same program is acceptable in fp32, with the hazard recorded
    path32 = tmp_path / "big32.mlpackage"
    convert_to_mlpackage(TinyPipeline(mask_bias=1e8).eval(), tiny_example(), path32, deployment_target="iOS16",
                         precision="fp32")
    statistics = validate_package(path32, tiny_expectation(precision="fp32"))
    assert statistics["ops_by_dtype"] == {"fp32": statistics["op_count"]}
    assert len(statistics["fp16_range_issues"]) == 1


def test_conversion_refusal_carries_the_converter_reason(tmp_path: Path) -> None:
    needs_coremltools()
    with pytest.raises(CoreMLConversionError, match="No available version for pixel_unshuffle in the "
                                                    "coremltools.target.iOS15 opset"):
        convert_to_mlpackage(tiny_model(), tiny_example(), tmp_path / "t.mlpackage", deployment_target="iOS15",
                             precision="fp16")
    with pytest.raises(RbenchError, match="not an ML Program target"):
        convert_to_mlpackage(tiny_model(), tiny_example(), tmp_path / "t.mlpackage", deployment_target="iOS14",
                             precision="fp16")


# -------------------------------------------------------------------------------- exporter options

def test_default_options_are_ios16_and_all() -> None:
    request = ExportRequest("rethined", 1024, 1024, "coreml", precision="fp16")
    assert CoreMLExporter().options(request) == {"deployment_target": "iOS16", "compute_units": "ALL"}


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_convert_records_profile_options(precision: str, tmp_path: Path) -> None:
    needs_coremltools()
    request = ExportRequest("rethined", 32, 32, "coreml", precision=precision,
                            options={"deployment_target": "iOS17", "compute_units": "CPU_AND_NE"})
    fields = CoreMLExporter().convert(tiny_model(), request, tmp_path / "t.mlpackage", tiny_example())
    coreml = fields["coreml"]
    assert (coreml["deployment_target"], coreml["spec_version"], coreml["opset"]) == ("iOS17", 8, "CoreML7")
    assert (coreml["compute_units"], coreml["compute_precision"]) == ("CPU_AND_NE", precision)
    if precision == "fp32":
        assert "cast" not in coreml["ops"] and set(coreml["ops_by_dtype"]) == {"fp32"}
        assert "fp16_error_bound" not in fields
    else:
        assert fields["fp16_error_bound"]["max_abs_error"] > 0


def test_options_reject_unknown_compute_units_and_keys() -> None:
    with pytest.raises(RbenchError, match="compute units must be one of"):
        CoreMLExporter().options(ExportRequest("rethined", 32, 32, "coreml", options={"compute_units": "NE_ONLY"}))
    with pytest.raises(RbenchError, match="does not take these options.*opset"):
        CoreMLExporter().options(ExportRequest("rethined", 32, 32, "coreml", options={"opset": 13}))


# -------------------------------------------------------------------------------- fp16 emulation

def test_fp16_emulation_matches_half_precision_kernels() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1)).eval()
    image = torch.rand(1, 3, 16, 16)

    class Pipeline(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.net(image) * mask

    bound = fp16_error_bound(Pipeline().eval(), (image, torch.ones(1, 1, 16, 16)))
    with torch.inference_mode():
        reference = model(image)
        half = model.half()(image.half()).float()
    expected = float((half - reference).abs().max())
    assert bound["max_abs_error"] > 0
    assert bound["max_abs_error"] == pytest.approx(expected, rel=0.5, abs=1e-4)


def test_fp16_emulation_fails_on_activation_overflow() -> None:
    class Overflowing(nn.Module):
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            energy = (image * 1000.0) ** 2  # up to 1e6: inf in fp16, although the result is back in range
            return energy / 1e6 * mask

    with pytest.raises(CoreMLValidationError, match="fp16 overflow: pow"):
        fp16_error_bound(Overflowing(), tiny_example())


# -------------------------------------------------------------------------------- multifunction bundle

def test_bundle_shares_weights_across_resolutions(tmp_path: Path) -> None:
    needs_coremltools()
    packages = []
    for side in (32, 64):
        packages.append(tmp_path / f"tiny_{side}.mlpackage")
        convert_to_mlpackage(tiny_model(), tiny_example(side), packages[-1], deployment_target="iOS16",
                             precision="fp16")
    bundle = bundle_resolutions(packages, tmp_path / "bundle.mlpackage")
    spec, program = load_program(bundle)
    assert spec.specificationVersion == 9
    assert sorted(program.functions) == ["main_32x32", "main_64x64"]
    assert spec.description.defaultFunctionName == "main_32x32"

    def weights(path: Path) -> int:
        return size_of(path / "Data" / "com.apple.CoreML" / "weights")

    assert weights(bundle) == weights(packages[0]) == weights(packages[1])


# -------------------------------------------------------------------------------- runner, with a fake coremltools

class FakeCoreML:
    """The slice of coremltools' API the runner uses: ``models.utils.compile_model(package, destination)``,
    ``models.MLModel(path, compute_units=)`` (compiles into a new temporary directory each time, as Core ML does),
    ``.predict(dict) -> dict``, ``models.CompiledMLModel(path, compute_units=)`` and ``ComputeUnit``."""

    ComputeUnit = enum.Enum("ComputeUnit", COMPUTE_UNITS)

    def __init__(self, root: Path, output: Any = None) -> None:
        self.root, self.output = root, output
        self.calls: list[tuple[str, str, Any]] = []
        self.compilations = itertools.count()
        self.models = SimpleNamespace(MLModel=self._mlmodel, CompiledMLModel=self._compiled_mlmodel,
                                      utils=SimpleNamespace(compile_model=self._compile_model))

    def _compile(self, package: str, destination: Path) -> Path:
        assert Path(package).suffix == ".mlpackage" and Path(package).is_dir()
        destination.mkdir(parents=True)
        (destination / "model.mil").write_text(f"compiled from {package}")
        return destination

    def _compile_model(self, package: str, destination: str) -> str:
        self.calls.append(("compile_model", package, destination))
        return str(self._compile(package, Path(destination)))

    def _mlmodel(self, path: str, compute_units: Any = None) -> "FakeModel":
        compiled = self._compile(path, self.root / f"tmp{next(self.compilations)}" / "model.mlmodelc")
        self.calls.append(("MLModel", path, compute_units))
        return FakeModel(self, compiled)

    def _compiled_mlmodel(self, path: str, compute_units: Any = None) -> "FakeModel":
        assert (Path(path) / "model.mil").is_file(), "CompiledMLModel needs a compiled model"
        self.calls.append(("CompiledMLModel", path, compute_units))
        return FakeModel(self, Path(path))


class FakeModel:
    def __init__(self, api: FakeCoreML, compiled: Path) -> None:
        self.api, self.compiled = api, compiled

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert set(inputs) == {"image", "mask"}
        output = self.api.output
        if output is None:
            output = np.zeros_like(inputs["image"])
        elif callable(output):
            output = output(inputs)
        return {"inpainted": output, "other": np.ones(1)}


@pytest.fixture
def fake_mac(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCoreML:
    """macOS as the runner and the measurement see it: coremltools' prediction API, the OS version, and the
    memory readings (no /proc: RSS from psutil, the peak from ru_maxrss in bytes, no reset)."""
    fake = FakeCoreML(tmp_path / "coreml-temp")
    monkeypatch.setattr(coreml_runner, "coremltools_module", lambda: fake)
    monkeypatch.setattr(coreml_runner, "host_platform", lambda: ("Darwin", (14, 5)))
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    monkeypatch.setattr(memory, "open", no_proc, raising=False)
    return fake


def no_proc(path: Any, *args: Any, **kwargs: Any) -> Any:
    """``open`` on a machine without /proc (macOS)."""
    if str(path).startswith("/proc"):
        raise FileNotFoundError(f"{path}: macOS has no /proc")
    return open(path, *args, **kwargs)


def fake_artifact(tmp_path: Path, resolution: int = 512) -> Artifact:
    path = tmp_path / "artifacts" / f"rethined_coreml-fp16_{resolution}x{resolution}.mlpackage"
    (path / "Data").mkdir(parents=True)
    manifest = {"sha256": "ab12" * 16, "resolution": [resolution, resolution], "precision": "fp16",
                "target": "coreml", "inputs": [{"name": "image"}, {"name": "mask"}], "outputs": [{"name": "inpainted"}],
                "identity": {"model": "rethined", "variant": "dense", "seed": 0, "weights_sha256": None}}
    return Artifact(path, manifest)


def runner(compute_units: str = "ALL", cache_dir: Path | None = None) -> CoreMLRunner:
    return CoreMLRunner(CoreMLRunnerSettings(compute_units, str(cache_dir) if cache_dir else None))


def test_runner_is_unavailable_off_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coreml_runner, "host_platform", lambda: ("Linux", ()))
    availability = create_runner("local-coreml").availability()
    assert not availability.ok
    assert availability.reason == "Core ML prediction needs macOS 12+; this is Linux"
    assert "rethined-bench[coreml]" in availability.fix and "Mac" in availability.fix


def test_runner_availability_on_macos_versions(fake_mac: FakeCoreML, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner().availability().ok
    monkeypatch.setattr(coreml_runner, "host_platform", lambda: ("Darwin", (12, 6)))
    assert runner("CPU_AND_GPU").availability().ok
    needs_13 = runner("CPU_AND_NE").availability()
    assert not needs_13.ok and "needs macOS 13+" in needs_13.reason and "macOS 12.6" in needs_13.reason
    monkeypatch.setattr(coreml_runner, "host_platform", lambda: ("Darwin", (11, 7)))
    assert "needs macOS 12+" in runner().availability().reason


def test_runner_rejects_unknown_compute_units() -> None:
    with pytest.raises(RbenchError, match="compute_units must be one of"):
        CoreMLRunnerSettings(compute_units="GPU")
    with pytest.raises(RbenchError, match="compute_units must be one of"):
        create_runner("local-coreml", {"compute_units": "GPU"})


def test_prepare_compiles_once_then_loads_cold_and_warm(fake_mac: FakeCoreML, tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path)
    prepared = runner("CPU_AND_NE").prepare(artifact)
    compiled = artifact.path.parent / ".coreml-compiled" / f"{artifact.path.stem}-ab12ab12ab12.mlmodelc"
    assert fake_mac.calls == [("compile_model", str(artifact.path), str(compiled))]
    assert prepared.handle == str(compiled) and (compiled / "model.mil").is_file()
    assert prepared.compile_ms is not None and prepared.compile_ms >= 0 and not prepared.cached
    assert prepared.receipt["tool"] == "coremltools.models.utils.compile_model"

    again = runner("CPU_AND_NE").prepare(artifact)  # another process: the build cache hits, nothing recompiles
    assert again.cached and again.compile_ms == prepared.compile_ms and len(fake_mac.calls) == 1

    first = runner("CPU_AND_NE")
    cold = first.load(prepared)
    assert fake_mac.calls[-1] == ("MLModel", str(artifact.path), FakeCoreML.ComputeUnit.CPU_AND_NE)
    outputs = cold.infer({"image": np.full((1, 3, 2, 2), 0.5), "mask": np.zeros((1, 1, 2, 2))})
    assert len(outputs) == 1 and outputs[0].shape == (1, 3, 2, 2)  # "inpainted" only, in manifest order
    first.load(prepared)
    assert fake_mac.calls[-1] == ("CompiledMLModel", str(compiled), FakeCoreML.ComputeUnit.CPU_AND_NE)
    runner("CPU_AND_NE").load(prepared)  # a fresh runner (a fresh process) loads cold again
    assert fake_mac.calls[-1][0] == "MLModel"


def test_a_deleted_compiled_model_is_built_again(fake_mac: FakeCoreML, tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path)
    prepared = runner().prepare(artifact)
    (Path(prepared.handle) / "model.mil").unlink()
    Path(prepared.handle).rmdir()
    assert not runner().prepare(artifact).cached
    assert [call[0] for call in fake_mac.calls] == ["compile_model", "compile_model"]


def test_warm_load_needs_a_compiled_model(fake_mac: FakeCoreML, tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path)
    unprepared = Prepared(artifact, str(artifact.path))
    with pytest.raises(RbenchError, match="no compiled model"):
        runner().load_warm(unprepared)


def test_runner_through_the_measurement_protocol(fake_mac: FakeCoreML, tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path)
    coreml = runner(cache_dir=tmp_path / "cache")
    prepared = coreml.prepare(artifact)
    record = measure_process(coreml, prepared, Protocol(processes=1, warmup=1, min_iters=3, min_time_s=0.0))
    assert len(record.samples_ms) >= 3 and record.load_cold_ms > 0 and record.load_warm_ms > 0
    assert [call[0] for call in fake_mac.calls] == ["compile_model", "MLModel", "CompiledMLModel"]
    assert fake_mac.calls[2][1] == str(tmp_path / "cache" / f"{artifact.path.stem}-ab12ab12ab12.mlmodelc")
    assert record.peak_memory_mb is not None and record.peak_memory_mb >= 0  # the macOS path, /proc untouched
    described = coreml.describe()
    assert described["compute_units"] == "ALL" and described["os"] == "macOS 14.5"


def test_parity_predicts_on_the_artifact_inputs(fake_mac: FakeCoreML, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """The export driver's parity path: prepare, predict on the given inputs, compare with the reference."""
    artifact = fake_artifact(tmp_path, 64)
    inputs = {"image": np.random.default_rng(0).random((1, 3, 64, 64), np.float32),
              "mask": np.zeros((1, 1, 64, 64), np.float32)}
    reference = inputs["image"] * 0.5

    def shifted(shift: float) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        def predict(given: dict[str, np.ndarray]) -> np.ndarray:
            assert all(np.array_equal(given[name], inputs[name]) for name in inputs)
            return reference + shift
        return predict

    fake_mac.output = shifted(0.01)
    result = check_parity(artifact, runner(), inputs, reference)
    assert result["status"] == "ok" and result["max_abs_error"] == pytest.approx(0.01, abs=1e-6)
    assert result["runner"] == "local-coreml" and result["atol"] == 2e-2
    fake_mac.output = shifted(0.05)
    assert check_parity(artifact, runner(), inputs, reference)["status"] == "failed"
    monkeypatch.setattr(coreml_runner, "host_platform", lambda: ("Linux", ()))
    off_mac = check_parity(artifact, runner(), inputs, reference)
    assert off_mac == {"status": "not run", "reason": "local-coreml: Core ML prediction needs macOS 12+; this is "
                                                      "Linux"}


# -------------------------------------------------------------------------------- the real thing (macOS)

@pytest.fixture(scope="module")
def macos_artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return export_model("rethined", 1024, tmp_path_factory.mktemp("coreml-macos"))


@pytest.mark.macos
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML prediction needs macOS")
@pytest.mark.parametrize("compute_units", COMPUTE_UNITS)
def test_predict_on_macos(compute_units: str, macos_artifact: Artifact, tmp_path: Path) -> None:
    from rethined_bench.inputs import make_inputs
    from rethined_bench.optimize import deploy

    assert macos_artifact.manifest["parity"]["status"] == "ok"  # the export driver predicted (local-coreml, ALL)
    coreml = runner(compute_units, tmp_path)
    if not coreml.availability().ok:
        pytest.skip(coreml.availability().reason)
    image, mask = make_inputs(1024, 1024, seed=0)
    with torch.inference_mode():
        reference = deploy(rethined_bench.create_model("rethined"))(image, mask).numpy()
    inputs = {"image": image.numpy(), "mask": mask.numpy()}
    assert check_parity(macos_artifact, coreml, inputs, reference)["status"] == "ok"  # prepare + cold load
    prepared = coreml.prepare(macos_artifact)
    warm = coreml.load(prepared)
    assert isinstance(warm.model, coreml_runner.coremltools_module().models.CompiledMLModel)
    assert check_parity(macos_artifact, coreml, inputs, reference)["status"] == "ok"
