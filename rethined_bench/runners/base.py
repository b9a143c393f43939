"""Runner interface: how rbench loads an artifact on a device and runs one inference.

The measurement protocol (``rethined_bench.measure``) owns timing; a runner only loads and infers, and says what
its numbers include (``settings``). Runners for devices rbench cannot drive from here still implement this
interface; they report themselves unavailable with the reason (``rbench doctor``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from exporters.base import Artifact


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""
    fix: str = ""


class LoadedModel(abc.ABC):
    """An artifact loaded on the device, ready to run with fixed inputs."""

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> Any:
        """Run one inference to completion (synchronised) and return the outputs."""


class Runner(abc.ABC):
    """Loads artifacts of one target on one kind of device."""

    name: str
    target: str

    def __init__(self, **settings: Any) -> None:
        self.options = settings

    @abc.abstractmethod
    def availability(self) -> Availability:
        """Whether this runner can work on this machine, and if not, why and what to do."""

    @abc.abstractmethod
    def load(self, artifact: Artifact) -> LoadedModel:
        """Load ``artifact`` (file read included): this is what load time measures."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """What the numbers include: threads, provider, optimisation level, copies, precision handling."""


_RUNNERS: dict[str, Callable[..., Runner]] = {}


def register_runner(name: str) -> Callable[[type[Runner]], type[Runner]]:
    def decorate(cls: type[Runner]) -> type[Runner]:
        cls.name = name
        _RUNNERS[name] = cls
        return cls

    return decorate


def runner_names() -> list[str]:
    from . import _builtin  # noqa: F401

    return sorted(_RUNNERS)


def get_runner(name: str, **settings: Any) -> Runner:
    from ..errors import UnknownNameError

    if name not in runner_names():
        raise UnknownNameError("runner", name, list(_RUNNERS))
    return _RUNNERS[name](**settings)
