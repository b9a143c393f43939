"""Optional toolchains, imported only when used: ``rbench doctor`` and ``rbench devices`` work without any of them.

Each importer raises :class:`MissingDependencyError` naming the extra to install, so a missing toolchain is one
clear line for the user, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from types import ModuleType

from .errors import MissingDependencyError

COREML_COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")


def import_optional(module: str, package: str, extra: str) -> ModuleType:
    """``import module``, or :class:`MissingDependencyError` saying ``pip install 'rethined-bench[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package, extra) from exc


def coremltools_module() -> ModuleType:
    """Import coremltools quietly: its import-time warnings (untested torch version, "Failed to load
    _MLModelProxy" on Linux) are not for users."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return import_optional("coremltools", "coremltools", "coreml")
    finally:
        logger.setLevel(level)
