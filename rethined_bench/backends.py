"""The backend registry: runner and exporter names mapped to ``"module:Class"``, imported only when used.

Listing devices or running ``rbench doctor`` imports no optional toolchain: a runner module imports its toolchain
(coremltools, tensorrt, cuda, qai_hub) inside the methods that need it. Adding a backend is one exporter module,
one runner module, one device profile and its lines here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .errors import RbenchError, UnknownNameError
from .settings import build

if TYPE_CHECKING:
    from exporters.base import Exporter

    from .devices import DeviceProfile
    from .runners.base import Runner

RUNNERS = {
    "local-ort": "rethined_bench.runners.ort:OrtRunner",
    "local-coreml": "rethined_bench.runners.coreml:CoreMLRunner",
    "ssh-trtexec": "rethined_bench.runners.ssh_trtexec:SshTrtexecRunner",
    "local-ort-cuda": "rethined_bench.runners.ort_cuda:OrtCudaRunner",
    "local-tensorrt": "rethined_bench.runners.tensorrt:TensorRTRunner",
    "aihub": "rethined_bench.runners.aihub:AihubRunner",
}
EXPORTERS = {
    "onnx": "exporters.onnx:OnnxExporter",
    "coreml": "exporters.coreml:CoreMLExporter",
    "tensorrt": "exporters.tensorrt:TensorRTExporter",
    "qnn": "exporters.qnn:QnnExporter",
}


def _load(kind: str, table: Mapping[str, str], name: str) -> type:
    if name not in table:
        raise UnknownNameError(kind, name, list(table))
    module_name, class_name = table[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def runner_names() -> list[str]:
    return sorted(RUNNERS)


def target_names() -> list[str]:
    return sorted(EXPORTERS)


def runner_class(name: str) -> type["Runner"]:
    return _load("runner", RUNNERS, name)


def exporter_class(target: str) -> type["Exporter"]:
    return _load("target", EXPORTERS, target)


def _settings(cls: type, values: Mapping[str, Any] | None, what: str) -> Any:
    try:
        return cls.settings_class(**(values or {}))
    except TypeError as exc:
        raise RbenchError(f"invalid settings for {what}: {exc}") from exc


def create_runner(name: str, settings: Mapping[str, Any] | None = None, *, device: str | None = None) -> "Runner":
    """Runner ``name`` with settings given by field name (e.g. ``{"threads": 2}``); defaults for the rest."""
    cls = runner_class(name)
    return cls(_settings(cls, settings, f"runner {name}"), device=device)


def create_exporter(target: str) -> "Exporter":
    return exporter_class(target)()


def local_runner(target: str) -> "Runner | None":
    """The runner that executes ``target``'s artifacts on this machine (parity, the gate's A/B), if any."""
    name = exporter_class(target).local_runner
    return create_runner(name) if name else None


def runner_for(profile: "DeviceProfile") -> "Runner":
    """The profile's runner, with its settings from ``[connection]``, ``[toolchain]`` and the environment."""
    cls = runner_class(profile.runner)
    settings = build(cls.settings_class, profile.settings_values(), source=str(profile.source),
                     env_device=profile.name)
    return cls(settings, device=profile.name)


def export_options(profile: "DeviceProfile") -> dict[str, Any]:
    """The profile's exporter settings (e.g. ONNX opset, Core ML deployment target), by field name."""
    cls = exporter_class(profile.target)
    return asdict(build(cls.settings_class, profile.settings_values(), source=str(profile.source),
                        env_device=profile.name))
