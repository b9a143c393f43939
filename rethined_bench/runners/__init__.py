"""Runners: one module per backend; each loads an artifact and runs it (timing is the protocol's job)."""

from .base import Availability, LoadedModel, Runner, get_runner, register_runner, runner_names

__all__ = ["Availability", "LoadedModel", "Runner", "get_runner", "register_runner", "runner_names"]
