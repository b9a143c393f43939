"""Exporters: one module per target, sharing the request/artifact/manifest mechanism of ``exporters.base``."""

from __future__ import annotations

from rethined_bench.errors import UnknownNameError

from .base import Artifact, Exporter, ExportRequest, export, parity

_TARGETS = {"onnx": "exporters.onnx:OnnxExporter", "coreml": "exporters.coreml:CoreMLExporter"}


def list_targets() -> list[str]:
    return sorted(_TARGETS)


def get_exporter(target: str) -> Exporter:
    """The exporter for ``target`` (imported on demand, so optional toolchains load only when used)."""
    if target not in _TARGETS:
        raise UnknownNameError("target", target, list(_TARGETS))
    module_name, class_name = _TARGETS[target].split(":")
    module = __import__(module_name, fromlist=[class_name])
    return getattr(module, class_name)()


__all__ = ["Artifact", "ExportRequest", "Exporter", "export", "get_exporter", "list_targets", "parity"]
