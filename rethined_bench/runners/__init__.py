"""Runners: one module per backend, each with the lifecycle of :mod:`.base` (availability, prepare, measure, infer).

Runners are named in :mod:`rethined_bench.backends` and imported from there on demand.
"""

from .base import Availability, Build, LoadedModel, LocalRunner, Prepared, Runner

__all__ = ["Availability", "Build", "LoadedModel", "LocalRunner", "Prepared", "Runner"]
