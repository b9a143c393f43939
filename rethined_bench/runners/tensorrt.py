"""TensorRT runner (``local-tensorrt``): an engine built from the artifact's ONNX on this machine's NVIDIA GPU, run
through TensorRT 10's Python API with cuda-python for memory, copies and the stream.

GPU-less safety (reference/backends.md §2.1): without CUDA, ``trt.Runtime`` still returns an object and
``deserialize_cuda_engine`` on it segfaults, so every path (availability, the build in ``prepare``, load) first
asks cuda-python for a CUDA device and only then imports TensorRT. Measurement runs in fresh worker processes
(:class:`~.base.LocalRunner`), so a driver fault there costs a cell, not the sweep.

- **prepare** (the device build, in the rbench process): ONNX → ``OnnxParser`` → ``build_serialized_network``
  with ``BuilderFlag.FP16`` for fp16 artifacts, saved to a content-addressed
  ``<artifact dir>/.tensorrt/*.engine``; cached by (artifact sha256, device, :meth:`TensorRTRunner.toolchain`).
- **load** (timed by the protocol): engine file read → CUDA context → ``trt.Runtime`` → ``deserialize_cuda_engine``
  → ``create_execution_context`` → ``cudaMalloc`` per I/O tensor + a stream; each stage's time is kept.
- **infer** (timed): host → device copies of the inputs, ``execute_async_v3``, device → host copies of the
  manifest's outputs, stream synchronisation. CUDA events around ``execute_async_v3`` also give the GPU compute
  time alone (``TensorRTModel.gpu_compute_ms``).

Only TensorRT 10.x: 11 removed ``BuilderFlag.FP16`` (weak typing), 8.x lacks named-tensor execution.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..errors import MissingDependencyError, RbenchError
from ..settings import setting
from ..toolchains import cuda_runtime_module, tensorrt_module
from .base import Availability, Build, LoadedModel, LocalRunner, Prepared

SUPPORTED_MAJOR = "10"
CACHE_DIR_NAME = ".tensorrt"
INSTALL = "pip install 'rethined-bench[tensorrt]' (tensorrt-cu12>=10,<11 and cuda-python)"
NO_GPU_FIX = "run on a machine with an NVIDIA GPU and its driver (`nvidia-smi` must list the GPU)"


class Unavailable(RbenchError):
    """Why the runner cannot work here, with the fix (``availability()`` splits them again)."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(f"{reason}; {fix}")
        self.reason, self.fix = reason, fix


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: str  # "9.0"
    driver: str  # the CUDA version the driver supports, "12.4"


@dataclass(frozen=True)
class Toolkit:
    """What the runner found, in the order it looked: cuda-python, a CUDA device, then TensorRT."""

    cudart: ModuleType
    device: CudaDevice
    trt: ModuleType
    version: str


@dataclass(frozen=True)
class TensorRTRunnerSettings:
    tensorrt: str = setting(SUPPORTED_MAJOR, key="tensorrt",
                            help="the TensorRT major version engines are built and run with (10: BuilderFlag.FP16)")
    workspace_mib: int = setting(4096, help="the builder's workspace memory pool limit (MiB)")
    tf32: bool = setting(False, help="let fp32 layers use TF32 (TensorRT's default is on; off: fp32 means fp32)")
    device_index: int = setting(0, help="the CUDA device ordinal")

    def __post_init__(self) -> None:
        if self.tensorrt != SUPPORTED_MAJOR:
            raise RbenchError(f"tensorrt must be {SUPPORTED_MAJOR!r}, not {self.tensorrt!r}: local-tensorrt builds "
                              "with BuilderFlag.FP16, which TensorRT 11 removed")
        if self.workspace_mib < 1 or self.device_index < 0:
            raise RbenchError("workspace_mib must be >= 1 and device_index >= 0")


class TensorRTRunner(LocalRunner):
    """TensorRT 10 on this machine's NVIDIA GPU (module docstring). Load time = engine file read + CUDA context
    (first load in a process only) + runtime + deserialise + execution context + I/O buffers and stream; the
    first inference (lazy kernel loading) is the protocol's first inference. Latency includes the H2D and D2H
    copies from and to pageable numpy arrays."""

    name = "local-tensorrt"
    target = "tensorrt"
    settings_class = TensorRTRunnerSettings

    def __init__(self, settings: TensorRTRunnerSettings | None = None, *, device: str | None = None) -> None:
        super().__init__(settings, device=device)
        self._toolkit: Toolkit | None = None
        self.load_stages_ms: list[dict[str, float]] = []  # one per load in this process: cold, then warm
        self._gpu_times: list[list[float]] = []  # each loaded model's CUDA-event times
        self._builder_flags: list[str] | None = None  # of the engine loaded last

    # ------------------------------------------------------------------------------------------ availability

    def toolkit(self) -> Toolkit:
        """cuda-python, a CUDA device (``cudaGetDeviceCount``), then TensorRT 10, in that order, or
        :class:`Unavailable`: no TensorRT module is imported, let alone an object created, before CUDA is found."""
        if self._toolkit is None:
            cudart = _cuda_runtime()
            device = _cuda_device(cudart, self.settings.device_index)
            trt, version = _tensorrt(self.settings.tensorrt)
            self._toolkit = Toolkit(cudart, device, trt, version)
        return self._toolkit

    def availability(self) -> Availability:
        try:
            self.toolkit()
        except Unavailable as exc:
            return Availability(False, exc.reason, exc.fix)
        return Availability(True)

    def toolchain(self) -> str:
        """TensorRT, the CUDA driver, the GPU (engines are specific to all three) and the build options: the build
        cache key. Called first by ``prepare``, so the CUDA check precedes every build."""
        kit = self.toolkit()
        device = kit.device
        return (f"TensorRT {kit.version} / CUDA driver {device.driver} / {device.name} "
                f"(sm_{device.compute_capability.replace('.', '')}) / workspace {self.settings.workspace_mib} MiB, "
                f"tf32 {'on' if self.settings.tf32 else 'off'}")

    # ------------------------------------------------------------------------------------------ device build

    def engine_path(self, artifact: Artifact) -> Path:
        """``<artifact dir>/.tensorrt/<stem>-<sha256[:12]>-trt<version>-<toolchain digest>.engine``."""
        digest = hashlib.sha256(self.toolchain().encode()).hexdigest()[:8]
        name = f"{artifact.path.stem}-{artifact.sha256[:12]}-trt{self.toolkit().version}-{digest}.engine"
        return artifact.path.parent / CACHE_DIR_NAME / name

    def build(self, artifact: Artifact) -> Build:
        """Parse the artifact's ONNX and build a serialised engine (``BuilderFlag.FP16`` for fp16 artifacts)."""
        if artifact.path.suffix != ".onnx":
            raise RbenchError(f"local-tensorrt builds engines from .onnx artifacts, not {artifact.path.name}")
        precision = artifact.manifest["precision"]
        if precision not in ("fp16", "fp32"):
            raise RbenchError(f"local-tensorrt builds fp16 and fp32 engines, not {precision}")
        kit = self.toolkit()
        trt, cudart = kit.trt, kit.cudart
        _cuda(cudart, cudart.cudaSetDevice(self.settings.device_index), "cudaSetDevice")
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # 10.x: networks are always explicit-batch, the flag is deprecated
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(artifact.path.read_bytes(), str(artifact.path)):  # the path finds external weights
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no error reported"
            raise RbenchError(f"TensorRT cannot parse {artifact.path.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.settings.workspace_mib << 20)
        flags = []
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
            flags.append("FP16")
        if self.settings.tf32:
            flags.append("TF32")
        else:
            config.clear_flag(trt.BuilderFlag.TF32)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RbenchError(f"TensorRT could not build an engine from {artifact.path.name} (its log above says "
                              "why)")
        path = self.engine_path(artifact)
        size = _write_atomically(path, serialized)
        return Build(str(path), {
            "tool": "tensorrt.Builder.build_serialized_network", "source": artifact.path.name,
            "builder_flags": flags, "workspace_mib": self.settings.workspace_mib, "tensorrt": kit.version,
            "cuda_driver": kit.device.driver, "gpu": kit.device.name,
            "compute_capability": kit.device.compute_capability, "engine_bytes": size,
        })

    # ------------------------------------------------------------------------------------------ load and run

    def load(self, prepared: Prepared) -> "TensorRTModel":
        """Engine file → runnable context with device buffers; what load time covers (class docstring). Each
        stage's wall time is appended to ``load_stages_ms``: read, cuda_context (``cudaSetDevice`` +
        ``cudaFree(0)``, which creates the CUDA context on the process's first load), runtime
        (``trt.Runtime``), deserialize, context (``create_execution_context``, activation memory), buffers."""
        kit = self.toolkit()
        trt, cudart = kit.trt, kit.cudart
        path = Path(prepared.handle)
        if path.suffix != ".engine" or not path.is_file():
            raise RbenchError(f"no TensorRT engine at {path}; prepare the artifact first")
        model = TensorRTModel(cudart, _names(prepared.artifact, "outputs"))
        stages = model.load_stages_ms
        with _timed(stages, "read"):
            plan = path.read_bytes()
        with _timed(stages, "cuda_context"):
            _cuda(cudart, cudart.cudaSetDevice(self.settings.device_index), "cudaSetDevice")
            _cuda(cudart, cudart.cudaFree(0), "cudaFree(0)")
        with _timed(stages, "runtime"):
            model.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with _timed(stages, "deserialize"):
            model.engine = model.runtime.deserialize_cuda_engine(plan)
        if model.engine is None:
            raise RbenchError(f"TensorRT cannot deserialise {path.name} (built by another TensorRT version or for "
                              "another GPU?); delete it and prepare again")
        with _timed(stages, "context"):
            model.context = model.engine.create_execution_context()
        if model.context is None:
            raise RbenchError(f"TensorRT cannot create an execution context for {path.name} (out of GPU memory?)")
        with _timed(stages, "buffers"):
            model.allocate(trt, _names(prepared.artifact, "inputs"))
        self.load_stages_ms.append(stages)
        self._gpu_times.append(model.gpu_compute_ms)
        self._builder_flags = prepared.receipt.get("builder_flags")
        return model

    def describe(self) -> dict[str, Any]:
        kit = self.toolkit()
        gpu_ms = [ms for times in self._gpu_times for ms in times[1:]]  # each model's first run loads kernels
        return {
            "gpu": kit.device.name,
            "compute_capability": kit.device.compute_capability,
            "device_index": kit.device.index,
            "tensorrt": kit.version,
            "cuda_driver": kit.device.driver,
            "cuda_python": _distribution_version("cuda-python"),
            "builder_flags": self._builder_flags,
            "precision_handling": "fp16: BuilderFlag.FP16 (weak typing: TensorRT picks fp16 or fp32 per layer); "
                                  "fp32: no flag" + ("" if self.settings.tf32 else ", TF32 cleared"),
            "workspace_mib": self.settings.workspace_mib,
            "execution": "execute_async_v3 on one CUDA stream, no CUDA graph",
            "input_copies": "included: cudaMemcpyAsync host→device from pageable numpy arrays",
            "output_copies": "included: cudaMemcpyAsync device→host of the manifest's outputs, then "
                             "cudaStreamSynchronize",
            "load": "engine file read + CUDA context (first load in a process) + trt.Runtime + "
                    "deserialize_cuda_engine + create_execution_context + cudaMalloc of every I/O tensor + stream",
            "load_stages_ms": self.load_stages_ms,
            "gpu_compute_ms": {
                "median": statistics.median(gpu_ms) if gpu_ms else None, "inferences": len(gpu_ms),
                "method": "CUDA events around execute_async_v3 (no copies), every inference in the last worker "
                          "process but each model's first"},
        }


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    is_input: bool
    device: int = 0  # the cudaMalloc pointer

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


class TensorRTModel(LoadedModel):
    """A deserialised engine with its execution context, a device buffer per I/O tensor (bound by name), a stream
    and two CUDA events. Freed on :meth:`close` or garbage collection (the protocol deletes it before the warm
    reload), context before engine before runtime."""

    def __init__(self, cudart: ModuleType, output_names: list[str]) -> None:
        self.cudart = cudart
        self.output_names = output_names
        self.runtime: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.tensors: dict[str, _Tensor] = {}
        self.stream: Any = None
        self.events: tuple[Any, ...] = ()
        self.load_stages_ms: dict[str, float] = {}
        self.gpu_compute_ms: list[float] = []  # per inference: execute_async_v3 alone, by CUDA events

    def allocate(self, trt: ModuleType, input_names: list[str]) -> None:
        """``cudaMalloc`` and ``set_tensor_address`` for every I/O tensor of the engine; the engine's inputs must be
        the artifact's and its outputs must include the manifest's. Then the stream and the events."""
        cudart, engine = self.cudart, self.engine
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RbenchError(f"engine tensor {name} has a dynamic shape {shape}; artifacts are fixed-shape")
            tensor = _Tensor(name, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                             engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT)
            tensor.device = _cuda(cudart, cudart.cudaMalloc(tensor.nbytes), f"cudaMalloc of {name}")
            self.tensors[name] = tensor
            if not self.context.set_tensor_address(name, tensor.device):
                raise RuntimeError(f"set_tensor_address({name}) failed")
        inputs = sorted(t.name for t in self.tensors.values() if t.is_input)
        if inputs != sorted(input_names):
            raise RbenchError(f"the engine's inputs {inputs} are not the artifact's {sorted(input_names)}")
        missing = [n for n in self.output_names if n not in self.tensors or self.tensors[n].is_input]
        if missing:
            raise RbenchError(f"the engine has no output {missing[0]!r} (the artifact's manifest names it)")
        self.stream = _cuda(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.events = tuple(_cuda(cudart, cudart.cudaEventCreate(), "cudaEventCreate") for _ in range(2))

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        cudart, stream = self.cudart, self.stream
        staged = []  # the host arrays stay alive until the stream is synchronised
        for tensor in self.tensors.values():
            if not tensor.is_input:
                continue
            array = np.ascontiguousarray(inputs[tensor.name], dtype=tensor.dtype)
            if array.shape != tensor.shape:
                raise RbenchError(f"input {tensor.name} has shape {array.shape}; the engine takes {tensor.shape}")
            staged.append(array)
            _cuda(cudart, cudart.cudaMemcpyAsync(tensor.device, array.ctypes.data, tensor.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                  f"cudaMemcpyAsync of {tensor.name} to the device")
        start, end = self.events
        _cuda(cudart, cudart.cudaEventRecord(start, stream), "cudaEventRecord")
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("execute_async_v3 failed (TensorRT's log says why)")
        _cuda(cudart, cudart.cudaEventRecord(end, stream), "cudaEventRecord")
        outputs = []
        for name in self.output_names:
            tensor = self.tensors[name]
            host = np.empty(tensor.shape, tensor.dtype)
            _cuda(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, tensor.device, tensor.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                  f"cudaMemcpyAsync of {name} to the host")
            outputs.append(host)
        _cuda(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        self.gpu_compute_ms.append(_cuda(cudart, cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))
        return outputs

    def close(self) -> None:
        """Free what :meth:`allocate` made, then drop the context, engine and runtime in that order. Errors are
        ignored: this runs from ``__del__``."""
        cudart = self.cudart
        for tensor in self.tensors.values():
            cudart.cudaFree(tensor.device)
        self.tensors = {}
        for event in self.events:
            cudart.cudaEventDestroy(event)
        self.events = ()
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None
        self.runtime = None

    def __del__(self) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------- probing

def _cuda_runtime() -> ModuleType:
    try:
        return cuda_runtime_module()
    except MissingDependencyError as exc:
        raise Unavailable("cuda-python is not installed (cuda.bindings.runtime)", INSTALL) from exc


def _cuda_device(cudart: ModuleType, index: int) -> CudaDevice:
    """The CUDA device ``index``, or :class:`Unavailable` when there is no driver or no such device."""
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # cuda-python raises when it cannot load the driver library at all
        raise Unavailable(f"no CUDA driver ({str(exc).splitlines()[0]})", NO_GPU_FIX) from exc
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        raise Unavailable(f"no CUDA device (cudaGetDeviceCount: {_error_name(err)}, {count} devices)", NO_GPU_FIX)
    if index >= count:
        raise Unavailable(f"device_index is {index} but this machine has {count} CUDA device(s)",
                          f"set device_index below {count}")
    properties = _cuda(cudart, cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    driver = _cuda(cudart, cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")
    name = properties.name.decode(errors="replace") if isinstance(properties.name, bytes) else str(properties.name)
    return CudaDevice(index, name.rstrip("\x00"), f"{properties.major}.{properties.minor}",
                      f"{driver // 1000}.{driver % 1000 // 10}")


def _tensorrt(required: str) -> tuple[ModuleType, str]:
    """TensorRT and its version, or :class:`Unavailable` (not installed, its libraries missing, or not 10.x)."""
    try:
        trt = tensorrt_module()
    except MissingDependencyError as exc:
        cause = str(exc.__cause__).splitlines()[0] if exc.__cause__ else "not installed"
        raise Unavailable(f"TensorRT cannot be imported ({cause})", INSTALL) from exc
    version = str(trt.__version__)
    major = version.split(".")[0]
    if major != required:
        why = ("TensorRT 11 removed BuilderFlag.FP16 (weak typing)" if int(major) > int(required)
               else "it lacks TensorRT 10's named-tensor API (execute_async_v3)")
        raise Unavailable(f"TensorRT {version} is installed; local-tensorrt needs TensorRT {required}.x: {why}",
                          "pip install 'tensorrt-cu12>=10,<11'")
    return trt, version


# ---------------------------------------------------------------------------------------------------------- helpers

def _cuda(cudart: ModuleType, result: tuple[Any, ...], what: str) -> Any:
    """The value of a cuda-python call's ``(err, value)`` tuple (``None`` for ``(err,)``); RuntimeError if failed."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"{what} failed: {_error_name(err)}")
    return values[0] if values else None


def _error_name(err: Any) -> str:
    return getattr(err, "name", str(err))


@contextmanager
def _timed(stages: dict[str, float], stage: str) -> Iterator[None]:
    begin = time.perf_counter()
    yield
    stages[stage] = (time.perf_counter() - begin) * 1e3


def _names(artifact: Artifact, kind: str) -> list[str]:
    return [spec["name"] for spec in artifact.manifest[kind]]


def _write_atomically(path: Path, data: Any) -> int:
    """Write a buffer (TensorRT's ``IHostMemory``) to ``path`` through a temporary file; its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".partial")
    with os.fdopen(handle, "wb") as out:
        size = out.write(memoryview(data))
    os.replace(staging, path)
    return size


def _distribution_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
