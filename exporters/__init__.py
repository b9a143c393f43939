"""Exporters: one module per target, sharing the request/manifest/export driver of ``exporters.base``.

Targets are named in :mod:`rethined_bench.backends` and imported from there on demand.
"""

from __future__ import annotations

from .base import Exporter, ExportRequest, export, parity_inputs, parity_reference

__all__ = ["ExportRequest", "Exporter", "export", "parity_inputs", "parity_reference"]
