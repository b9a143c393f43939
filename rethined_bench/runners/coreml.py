"""Core ML runner (``local-coreml``): an ``.mlpackage`` on this Mac, through coremltools' prediction API.

Prediction needs macOS 12+ (``.mlpackage`` = ML Program); coremltools on Linux converts and inspects only, so there
this runner reports itself unavailable with the reason (``rbench doctor``). The module imports nothing heavy: the
coremltools import (slow, and noisy on Linux) happens in :func:`coremltools_module`, which is also the boundary
tests replace with a fake of the same API surface (``models.MLModel``, ``models.CompiledMLModel``, ``ComputeUnit``).

Build and load (reference/measurement.md §5). Core ML's compiled-model cache is keyed by the ``.mlmodelc`` path, and
``MLModel("x.mlpackage")`` compiles into a new temporary directory in every process, so it never hits:

- **prepare** (the device build): ``compile_model`` of the package to a fixed, content-addressed path
  (``<cache_dir>/<artifact>-<sha256[:12]>.mlmodelc``), timed as ``compile_ms`` and reused while it exists;
- **cold** (the first ``load`` of an artifact by a runner, i.e. in a fresh process): ``MLModel(package,
  compute_units)`` = compile + load + device specialisation, nothing cached: what an app pays on first launch;
- **warm** (every later ``load`` by the same runner): ``CompiledMLModel(<the prepared path>, compute_units)``,
  which Core ML can serve from its cache. The first warm load at a new path may still specialise for the device;
  the protocol's median over processes absorbs that.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..errors import MissingDependencyError, RbenchError
from ..settings import setting
from ..toolchains import COREML_COMPUTE_UNITS, coremltools_module
from .base import Availability, Build, LoadedModel, LocalRunner, Prepared

MIN_MACOS = (12, 0)  # .mlpackage / ML Program prediction
MIN_MACOS_FOR = {"CPU_AND_NE": (13, 0)}  # MLComputeUnits.cpuAndNeuralEngine
CACHE_DIR_NAME = ".coreml-compiled"


def host_platform() -> tuple[str, tuple[int, ...]]:
    """(``platform.system()``, macOS version as a tuple; empty off macOS)."""
    system = platform.system()
    release = platform.mac_ver()[0] if system == "Darwin" else ""
    return system, tuple(int(part) for part in release.split(".") if part.isdigit())


def prediction_support(compute_units: str = "ALL") -> Availability:
    """Whether Core ML prediction with ``compute_units`` can run on this machine (OS, version, coremltools)."""
    system, version = host_platform()
    needed = MIN_MACOS_FOR.get(compute_units, MIN_MACOS)
    wanted = needed[0]
    if system != "Darwin":
        return Availability(False, f"Core ML prediction needs macOS {wanted}+; this is {system or 'an unknown OS'}",
                            "run on a Mac with `pip install 'rethined-bench[coreml]'`; here, `rbench export "
                            "--target coreml` still converts and checks the package")
    if version < needed:
        return Availability(False, f"Core ML prediction with compute units {compute_units} needs macOS "
                                   f"{wanted}+; this is macOS {'.'.join(map(str, version))}",
                            "update macOS, or choose other compute units")
    try:
        coremltools_module()
    except MissingDependencyError as exc:
        return Availability(False, "coremltools is not installed", str(exc).split("; ", 1)[-1])
    return Availability(True)


def _compute_unit(ct: ModuleType, name: str) -> Any:
    return getattr(ct.ComputeUnit, name)


class CoreMLModel(LoadedModel):
    """A loaded ``MLModel`` or ``CompiledMLModel``; ``infer`` returns the outputs as arrays in manifest order."""

    def __init__(self, model: Any, output_names: list[str]) -> None:
        self.model = model
        self.output_names = output_names

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs = self.model.predict(inputs)
        return [np.asarray(outputs[name]) for name in self.output_names]


@dataclass(frozen=True)
class CoreMLRunnerSettings:
    compute_units: str = setting("ALL", help="Core ML's preference: ALL, CPU_AND_NE, CPU_AND_GPU or CPU_ONLY")
    cache_dir: str | None = setting(None, help="where compiled models are kept (default: next to the artifact)")

    def __post_init__(self) -> None:
        if self.compute_units not in COREML_COMPUTE_UNITS:
            raise RbenchError(f"compute_units must be one of {', '.join(COREML_COMPUTE_UNITS)}, "
                              f"not {self.compute_units!r}")


class CoreMLRunner(LocalRunner):
    """Core ML on this Mac. Prepare: compile to a fixed path; load: cold = compile + load of the ``.mlpackage``,
    warm = ``CompiledMLModel`` of the prepared path (module docstring). ``compute_units`` is Core ML's
    preference, not a guarantee (ALL permits the ANE)."""

    name = "local-coreml"
    target = "coreml"
    settings_class = CoreMLRunnerSettings

    def __init__(self, settings: CoreMLRunnerSettings | None = None, *, device: str | None = None) -> None:
        super().__init__(settings, device=device)
        self._loaded_cold: set[str] = set()  # sha256 of artifacts this runner has loaded cold

    @property
    def compute_units(self) -> str:
        return self.settings.compute_units

    def availability(self) -> Availability:
        return prediction_support(self.compute_units)

    def toolchain(self) -> str:
        system, version = host_platform()
        return f"coremltools {_coremltools_version()} on {system} {'.'.join(map(str, version))}"

    def build(self, artifact: Artifact) -> Build:
        """Compile the package once to its content-addressed ``.mlmodelc`` path."""
        destination = self.compiled_path(artifact)
        destination.parent.mkdir(parents=True, exist_ok=True)
        ct = coremltools_module()
        compiled = ct.models.utils.compile_model(str(artifact.path), str(destination))
        return Build(str(compiled), {"tool": "coremltools.models.utils.compile_model", "source": artifact.path.name})

    def load(self, prepared: Prepared) -> LoadedModel:
        """Cold on the first load of an artifact by this runner, warm afterwards."""
        if prepared.artifact.sha256 in self._loaded_cold:
            return self.load_warm(prepared)
        return self.load_cold(prepared)

    def load_cold(self, prepared: Prepared) -> "CoreMLModel":
        """Compile and load the package: no cache can hit."""
        ct = coremltools_module()
        model = ct.models.MLModel(str(prepared.artifact.path), compute_units=_compute_unit(ct, self.compute_units))
        self._loaded_cold.add(prepared.artifact.sha256)
        return CoreMLModel(model, _output_names(prepared.artifact))

    def load_warm(self, prepared: Prepared) -> "CoreMLModel":
        """Load the compiled model at the prepared path."""
        compiled = Path(prepared.handle)
        if compiled.suffix != ".mlmodelc" or not compiled.is_dir():
            raise RbenchError(f"no compiled model at {compiled}; prepare the artifact first")
        ct = coremltools_module()
        model = ct.models.CompiledMLModel(str(compiled), compute_units=_compute_unit(ct, self.compute_units))
        return CoreMLModel(model, _output_names(prepared.artifact))

    def compiled_path(self, artifact: Artifact) -> Path:
        """The fixed, content-addressed ``.mlmodelc`` path of ``artifact`` (next to it unless ``cache_dir``)."""
        root = Path(self.settings.cache_dir) if self.settings.cache_dir else artifact.path.parent / CACHE_DIR_NAME
        return root / f"{artifact.path.stem}-{artifact.sha256[:12]}.mlmodelc"

    def describe(self) -> dict[str, Any]:
        system, version = host_platform()
        return {
            "compute_units": self.compute_units,
            "prepare": "coremltools.models.utils.compile_model to a content-addressed .mlmodelc",
            "load_cold": "MLModel(.mlpackage): compile + load + device specialisation",
            "load_warm": "CompiledMLModel(<prepared .mlmodelc>)",
            "prediction": "MLModel.predict(dict of numpy arrays), synchronous",
            "input_copies": "included (numpy inputs converted to MLMultiArray)",
            "os": f"macOS {'.'.join(map(str, version))}" if system == "Darwin" else system,
            "coremltools": _coremltools_version(),
        }


def _output_names(artifact: Artifact) -> list[str]:
    return [spec["name"] for spec in artifact.manifest["outputs"]]


def _coremltools_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("coremltools")
    except metadata.PackageNotFoundError:
        return None
