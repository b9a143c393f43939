"""Core ML runner (``local-coreml``): an ``.mlpackage`` on this Mac, through coremltools' prediction API.

Prediction needs macOS 12+ (``.mlpackage`` = ML Program); coremltools on Linux converts and inspects only, so there
this runner reports itself unavailable with the reason (``rbench doctor``). The module imports nothing heavy: the
coremltools import (slow, and noisy on Linux) happens in :func:`coremltools_module`, which is also the boundary
tests replace with a fake of the same API surface (``models.MLModel``, ``models.CompiledMLModel``, ``ComputeUnit``).

Load time (reference/measurement.md §5). Core ML's compiled-model cache is keyed by the ``.mlmodelc`` path, and
``MLModel("x.mlpackage")`` compiles into a new temporary directory in every process, so it never hits:

- **cold** (the first ``load`` of an artifact by a runner, i.e. in a fresh process): ``MLModel(package,
  compute_units)`` = compile + load + device specialisation, nothing cached; the compiled model is then copied to a
  fixed, content-addressed path (``<cache_dir>/<artifact>-<sha256[:12]>.mlmodelc``) if it is not there yet.
- **warm** (every later ``load`` by the same runner): ``CompiledMLModel(<fixed path>, compute_units)``, which Core ML
  can serve from its cache. The first warm load at a new path may still specialise for the device; the protocol's
  median over processes absorbs that.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from exporters.base import PARITY_ATOL, Artifact, parity

from ..errors import MissingDependencyError, RbenchError
from .base import Availability, LoadedModel, Runner, register_runner

COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
MIN_MACOS = (12, 0)  # .mlpackage / ML Program prediction
MIN_MACOS_FOR = {"CPU_AND_NE": (13, 0)}  # MLComputeUnits.cpuAndNeuralEngine
CACHE_DIR_NAME = ".coreml-compiled"


def coremltools_module() -> ModuleType:
    """Import coremltools quietly: its import-time warnings (untested torch version, "Failed to load
    _MLModelProxy" on Linux) are not for users. Raises :class:`MissingDependencyError` if it is not installed."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError as exc:
        raise MissingDependencyError("coremltools", "coreml") from exc
    finally:
        logger.setLevel(level)
    return coremltools


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


def predict_here(path: Path, inputs: dict[str, np.ndarray], output: str, compute_units: str = "ALL"
                 ) -> np.ndarray | None:
    """One prediction of the package at ``path``; ``None`` where Core ML cannot predict (off macOS)."""
    if not prediction_support(compute_units).ok:
        return None
    ct = coremltools_module()
    model = ct.models.MLModel(str(path), compute_units=_compute_unit(ct, compute_units))
    return np.asarray(model.predict(inputs)[output])


class CoreMLModel(LoadedModel):
    """A loaded ``MLModel`` or ``CompiledMLModel``; ``infer`` returns the outputs as arrays in manifest order."""

    def __init__(self, model: Any, output_names: list[str]) -> None:
        self.model = model
        self.output_names = output_names

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs = self.model.predict(inputs)
        return [np.asarray(outputs[name]) for name in self.output_names]


@register_runner("local-coreml")
class CoreMLRunner(Runner):
    """Core ML on this Mac. Load: cold = compile + load of the ``.mlpackage``; warm = ``CompiledMLModel`` at a
    fixed path (module docstring). ``compute_units`` is Core ML's preference, not a guarantee (ALL permits the ANE)."""

    target = "coreml"

    def __init__(self, compute_units: str = "ALL", cache_dir: str | None = None) -> None:
        super().__init__(compute_units=compute_units, cache_dir=cache_dir)
        if compute_units not in COMPUTE_UNITS:
            raise RbenchError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, not {compute_units!r}")
        self.compute_units = compute_units
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._loaded_cold: set[str] = set()  # sha256 of artifacts this runner has loaded cold

    def availability(self) -> Availability:
        return prediction_support(self.compute_units)

    def load(self, artifact: Artifact) -> LoadedModel:
        """Cold on the first load of ``artifact`` by this runner, warm afterwards."""
        if artifact.sha256 in self._loaded_cold and self.compiled_path(artifact).is_dir():
            return self.load_warm(artifact)
        return self.load_cold(artifact)

    def load_cold(self, artifact: Artifact) -> CoreMLModel:
        """Compile and load the package (no cache can hit), then keep the compiled model for warm loads."""
        ct = coremltools_module()
        model = ct.models.MLModel(str(artifact.path), compute_units=_compute_unit(ct, self.compute_units))
        self._keep_compiled(Path(model.get_compiled_model_path()), self.compiled_path(artifact))
        self._loaded_cold.add(artifact.sha256)
        return CoreMLModel(model, _output_names(artifact))

    def load_warm(self, artifact: Artifact) -> CoreMLModel:
        """Load the compiled model from its fixed path (made by :meth:`load_cold`)."""
        compiled = self.compiled_path(artifact)
        if not compiled.is_dir():
            raise RbenchError(f"no compiled model at {compiled}; a cold load of {artifact.path.name} makes it")
        ct = coremltools_module()
        model = ct.models.CompiledMLModel(str(compiled), compute_units=_compute_unit(ct, self.compute_units))
        return CoreMLModel(model, _output_names(artifact))

    def compiled_path(self, artifact: Artifact) -> Path:
        """The fixed, content-addressed ``.mlmodelc`` path of ``artifact`` (next to it unless ``cache_dir``)."""
        root = self.cache_dir or artifact.path.parent / CACHE_DIR_NAME
        return root / f"{artifact.path.stem}-{artifact.sha256[:12]}.mlmodelc"

    @staticmethod
    def _keep_compiled(source: Path, destination: Path) -> None:
        """Copy the compiled model to ``destination`` once; atomic, so concurrent processes never see half a copy."""
        if destination.is_dir():
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=destination.name + ".", dir=destination.parent))
        try:
            shutil.copytree(source, staging / "model", dirs_exist_ok=False)
            try:
                os.replace(staging / "model", destination)
            except OSError:  # another process got there first
                if not destination.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def settings(self) -> dict[str, Any]:
        system, version = host_platform()
        return {
            "compute_units": self.compute_units,
            "load_cold": "MLModel(.mlpackage): compile + load + device specialisation, then a one-off copy of "
                         "the compiled model to the warm cache",
            "load_warm": "CompiledMLModel(<fixed .mlmodelc path>)",
            "prediction": "MLModel.predict(dict of numpy arrays), synchronous",
            "input_copies": "included (numpy inputs converted to MLMultiArray)",
            "os": f"macOS {'.'.join(map(str, version))}" if system == "Darwin" else system,
            "coremltools": _coremltools_version(),
        }


def prediction_parity(loaded: LoadedModel, artifact: Artifact, reference: np.ndarray | None = None
                      ) -> dict[str, Any]:
    """Parity of one prediction against the PyTorch fp32 deploy form on the artifact's inputs.

    ``reference`` (the PyTorch output) is computed from the manifest's identity when not given; an artifact
    exported with ``--weights`` needs it given, since the manifest keeps the weights' sha256, not their path.
    """
    from ..inputs import make_inputs

    identity = artifact.manifest["identity"]
    height, width = artifact.manifest["resolution"]
    image, mask = make_inputs(height, width, seed=identity["seed"])
    inputs = {spec["name"]: tensor.numpy() for spec, tensor in zip(artifact.manifest["inputs"], (image, mask))}
    if reference is None:
        reference = _pytorch_reference(identity, image, mask)
    result = parity(reference, loaded.infer(inputs)[0])
    atol = PARITY_ATOL[artifact.manifest["precision"]]
    return result | {"status": "ok" if result["max_abs_error"] < atol else "failed", "atol": atol,
                     "reference": "PyTorch fp32 deploy form"}


def _pytorch_reference(identity: dict[str, Any], image: Any, mask: Any) -> np.ndarray:
    import torch

    from ..models import create_model
    from ..optimize import deploy

    if identity.get("weights_sha256"):
        raise RbenchError("this artifact was exported with --weights; pass the PyTorch reference output")
    model = deploy(create_model(identity["model"], identity["variant"], seed=identity["seed"]))
    with torch.inference_mode():
        return model(image, mask).numpy()


def _output_names(artifact: Artifact) -> list[str]:
    return [spec["name"] for spec in artifact.manifest["outputs"]]


def _coremltools_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("coremltools")
    except metadata.PackageNotFoundError:
        return None
