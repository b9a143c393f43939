"""Read the ``perf.yaml`` that quic/ai-hub-models publishes per model: Qualcomm's own AI Hub numbers, to compare ours
with. Text in, :class:`PerfYaml` out; both schemas the fixtures under ``../shared/fixtures/aihub/`` show:

- new (v0.4x): ``precisions.<precision>.components.<component>.performance_metrics.<device>.<runtime>`` with
  ``inference_time_milliseconds`` (ms), ``estimated_peak_memory_range_mb {min, max}`` (ai-hub-models rounds bytes
  / 2^20, so MiB), ``layer_counts {total, npu, gpu, cpu}`` (a unit count of 0 is left out), ``primary_compute_unit``,
  ``job_id``, ``job_status`` and ``tool_versions`` (e.g. ``qairt``, ``tflite``, ``onnx_runtime``). Runtimes are
  ``tflite``, ``qnn_dlc``, ``qnn_context_binary``, ``onnx``, ...; the precision (``float``, ``w8a8``, ...) is a key.
  No chipset or OS per device.
- old (v0.3-0.4): ``models[].performance_metrics[]``, one list item per reference device, holding
  ``reference_device_info {name, os, os_name, chipset, ...}``, a ``timestamp`` and one key per runtime
  (``torchscript_onnx_tflite``, ``torchscript_onnx_qnn``) with ``inference_time`` in **µs**,
  ``estimated_peak_memory_range {min, max}`` in **bytes**, ``precision`` (``fp16``), ``primary_compute_unit``,
  ``layer_info {layers_on_npu, layers_on_gpu, layers_on_cpu, total_layers}``, ``job_id`` and ``job_status``. Key
  order inside the items varies.

Every record is converted to ms and MiB with :mod:`.aihub_profile`'s helpers. Entries whose ``job_status`` is not
``Passed`` are kept apart in :attr:`PerfYaml.not_passed`, not dropped. YAML that is not a perf.yaml raises
:class:`RbenchError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import RbenchError
from .aihub_profile import to_mib_range, to_ms

# LayerCounts field -> key, per schema
_NEW_LAYER_KEYS = {"total": "total", "npu": "npu", "gpu": "gpu", "cpu": "cpu"}
_OLD_LAYER_KEYS = {"total": "total_layers", "npu": "layers_on_npu", "gpu": "layers_on_gpu", "cpu": "layers_on_cpu"}
_OLD_DEVICE_KEY = "reference_device_info"


class _Malformed(Exception):
    """A part of the YAML does not have the perf.yaml shape; the message names where."""


@dataclass(frozen=True)
class LayerCounts:
    """Layers per compute unit. New-schema files leave out a unit's count when it is 0, so it reads 0 there;
    otherwise None where the file does not say."""

    total: int | None
    npu: int | None
    gpu: int | None
    cpu: int | None


@dataclass(frozen=True)
class PublishedPerf:
    """One (model or component, precision, device, runtime) entry of a perf.yaml, in ms and MiB.

    ``runtime`` and ``precision`` are as written (``tflite`` / ``qnn_dlc`` / ``torchscript_onnx_qnn``; ``float`` in
    the new schema, ``fp16`` in the old). ``chipset``, ``os`` and ``os_name`` only the old schema gives.
    ``tool_versions`` only the new one (``{"qairt": "2.42.0...", "tflite": "2.17.0"}``).
    """

    schema: str
    model: str
    precision: str | None
    device: str
    chipset: str | None
    os: str | None
    os_name: str | None
    runtime: str
    inference_ms: float | None
    peak_memory_mib: tuple[float, float] | None
    layers: LayerCounts | None
    primary_compute_unit: str | None
    job_id: str | None
    job_status: str | None
    tool_versions: dict[str, str]

    @property
    def passed(self) -> bool:
        return str(self.job_status).lower() == "passed"


@dataclass(frozen=True)
class PerfYaml:
    """A parsed perf.yaml: ``passed`` entries carry numbers; ``not_passed`` ones (failed, or without a status) are
    kept for the report rather than silently dropped."""

    schema: str
    passed: tuple[PublishedPerf, ...]
    not_passed: tuple[PublishedPerf, ...]


def read_perf_yaml(path: Path) -> PerfYaml:
    """Parse the perf.yaml at ``path``; a missing file is an :class:`RbenchError`."""
    if not path.is_file():
        raise RbenchError(f"perf.yaml not found: {path}")
    return parse_perf_yaml(path.read_text(encoding="utf-8"), source=str(path))


def parse_perf_yaml(text: str, *, source: str = "perf.yaml") -> PerfYaml:
    """Parse perf.yaml text of either schema; ``source`` names it in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RbenchError(f"{source} is not valid YAML ({_yaml_problem(exc)})") from exc
    if not isinstance(data, Mapping) or not ({"precisions", "models"} & data.keys()):
        raise RbenchError(f"{source} is not an AI Hub perf.yaml: it has no 'precisions' (new schema) or "
                          "'models' (old schema) key")
    schema = "new" if "precisions" in data else "old"
    try:
        records = list(_new_records(data) if schema == "new" else _old_records(data))
    except _Malformed as exc:
        raise RbenchError(f"{source} is not a valid {schema}-schema AI Hub perf.yaml: {exc}") from exc
    return PerfYaml(schema=schema, passed=tuple(r for r in records if r.passed),
                    not_passed=tuple(r for r in records if not r.passed))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line out of PyYAML's multi-line message."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}" if mark is not None else problem


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Malformed(f"{where} is not a mapping")
    return value


def _section(block: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``block[key]`` as a mapping, empty when absent; ``where`` is ``block``'s path."""
    value = block.get(key)
    return _mapping({} if value is None else value, f"{where}.{key}" if where else key)


def _items(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Malformed(f"{where} is not a list")
    return value


def _number(value: Any) -> float | None:
    """A number as written; anything else (None, a placeholder string) is None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _bounds(block: Any) -> tuple[float | None, float | None]:
    """(min, max) of an ``estimated_peak_memory_range*`` block."""
    block = block if isinstance(block, Mapping) else {}
    return _number(block.get("min")), _number(block.get("max"))


def _layer_counts(block: Any, keys: Mapping[str, str], missing_unit: int | None) -> LayerCounts | None:
    """Counts from a ``layer_counts`` / ``layer_info`` block; a unit left out reads ``missing_unit``."""
    if not isinstance(block, Mapping):
        return None
    return LayerCounts(**{field: block.get(key, None if field == "total" else missing_unit)
                          for field, key in keys.items()})


def _new_records(data: Mapping[str, Any]) -> Iterator[PublishedPerf]:
    for precision, precision_block in _section(data, "precisions", "").items():
        where = f"precisions.{precision}"
        for component, component_block in _section(_mapping(precision_block, where), "components", where).items():
            where = f"precisions.{precision}.components.{component}"
            metrics = _section(_mapping(component_block, where), "performance_metrics", where)
            for device, runtimes in metrics.items():
                where = f"precisions.{precision}.components.{component}.performance_metrics.{device}"
                for runtime, entry in _mapping(runtimes, where).items():
                    yield _new_record(str(precision), str(component), str(device), str(runtime),
                                      _mapping(entry, f"{where}.{runtime}"))


def _new_record(precision: str, component: str, device: str, runtime: str,
                entry: Mapping[str, Any]) -> PublishedPerf:
    return PublishedPerf(
        schema="new", model=component, precision=precision, device=device,
        chipset=None, os=None, os_name=None, runtime=runtime,
        inference_ms=to_ms(_number(entry.get("inference_time_milliseconds")), per_ms=1),
        peak_memory_mib=to_mib_range(_bounds(entry.get("estimated_peak_memory_range_mb")), per_mib=1),
        # ai-hub-models writes a unit's count only when it is not 0
        layers=_layer_counts(entry.get("layer_counts"), _NEW_LAYER_KEYS, 0),
        primary_compute_unit=entry.get("primary_compute_unit"),
        job_id=entry.get("job_id"), job_status=entry.get("job_status"),
        tool_versions={str(k): str(v) for k, v in (entry.get("tool_versions") or {}).items()},
    )


def _old_records(data: Mapping[str, Any]) -> Iterator[PublishedPerf]:
    for m, model in enumerate(_items(data["models"], "models")):
        model = _mapping(model, f"models[{m}]")
        where = f"models[{m}].performance_metrics"
        for i, item in enumerate(_items(model.get("performance_metrics") or [], where)):
            item = _mapping(item, f"{where}[{i}]")
            device = _mapping(item.get(_OLD_DEVICE_KEY), f"{where}[{i}].{_OLD_DEVICE_KEY}")
            # every other mapping in the item is a runtime (the timestamp is a string)
            for runtime, entry in item.items():
                if runtime != _OLD_DEVICE_KEY and isinstance(entry, Mapping):
                    yield _old_record(str(model.get("name")), device, str(runtime), entry)


def _old_record(model: str, device: Mapping[str, Any], runtime: str, entry: Mapping[str, Any]) -> PublishedPerf:
    return PublishedPerf(
        schema="old", model=model, precision=entry.get("precision"),
        device=str(device.get("name")), chipset=device.get("chipset"), os=device.get("os"),
        os_name=device.get("os_name"), runtime=runtime,
        inference_ms=to_ms(_number(entry.get("inference_time"))),
        peak_memory_mib=to_mib_range(_bounds(entry.get("estimated_peak_memory_range"))),
        layers=_layer_counts(entry.get("layer_info"), _OLD_LAYER_KEYS, None),
        primary_compute_unit=entry.get("primary_compute_unit"),
        job_id=entry.get("job_id"), job_status=entry.get("job_status"),
        tool_versions={},
    )
