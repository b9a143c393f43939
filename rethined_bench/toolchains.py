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


def cuda_runtime_module() -> ModuleType:
    """cuda-python's CUDA runtime bindings (``from cuda.bindings import runtime``, cuda-python >= 12.6.1).

    Importing it is safe without a GPU: its calls return ``(cudaError_t, value...)`` tuples, so this is the module
    that says whether a CUDA device exists before anything touches TensorRT.
    """
    return import_optional("cuda.bindings.runtime", "cuda-python", "tensorrt")


def tensorrt_module() -> ModuleType:
    """TensorRT's Python API (``tensorrt-cu12``). Import it only once a CUDA device is known to exist: without CUDA,
    ``trt.Runtime`` still returns an object and ``deserialize_cuda_engine`` on it segfaults the process."""
    return import_optional("tensorrt", "tensorrt-cu12", "tensorrt")
