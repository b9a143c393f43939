"""The TensorRT runner against fakes of ``tensorrt`` (10.x) and ``cuda.bindings.runtime`` at the API boundary.

No GPU here (reference/backends.md §2.1: without CUDA, ``trt.Runtime`` returns an object whose
``deserialize_cuda_engine`` segfaults), so the fakes keep the real names, call order and return conventions
(cuda-python returns ``(err, value)`` tuples; parser errors print as TensorRT's do) and one shared log of every
call, injected where the runner looks them up (``cuda_runtime_module`` and ``tensorrt_module``). The fake device
memory is host memory behind integer pointers, so the copies are real ``memmove``s of the numpy buffers.
"""

from __future__ import annotations

import ctypes
import enum
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rethined_bench.artifact import Artifact, sha256_of
from rethined_bench.errors import MissingDependencyError, RbenchError
from rethined_bench.measure.protocol import Protocol, measure_process
from rethined_bench.runners import tensorrt as trt_runner
from rethined_bench.runners.base import Prepared
from rethined_bench.runners.tensorrt import TensorRTRunner, TensorRTRunnerSettings

H2D, D2H = 1, 2
GPU = "NVIDIA H200"


class CallLog(list):
    def names(self) -> list[str]:
        return [call[0] for call in self]


# ------------------------------------------------------------------------------------------ cuda.bindings.runtime

class FakeCudaRuntime:
    """``cuda.bindings.runtime``: every call returns ``(cudaError_t, value...)``; device memory is host
    ``bytearray``s behind integer pointers."""

    class cudaError_t(enum.IntEnum):  # noqa: N801 (cuda-python's name)
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorInvalidDevicePointer = 17
        cudaErrorInsufficientDriver = 35
        cudaErrorNoDevice = 100

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToHost = 0
        cudaMemcpyHostToDevice = H2D
        cudaMemcpyDeviceToHost = D2H

    def __init__(self, log: CallLog, devices: int = 1, no_device_error: bool = True) -> None:
        self.log, self.devices, self.no_device_error = log, devices, no_device_error
        self.memory: dict[int, bytearray] = {}
        self.streams: set[int] = set()
        self.events: dict[int, float | None] = {}
        self._next = 0x7F0000000000

    def _ok(self, name: str, *values: Any, args: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        self.log.append((name, *args))
        return (self.cudaError_t.cudaSuccess, *values)

    def _handle(self) -> int:
        self._next += 0x1000
        return self._next

    def cudaGetDeviceCount(self) -> tuple[Any, int]:
        self.log.append(("cudaGetDeviceCount",))
        if not self.devices and self.no_device_error:  # CUDA_VISIBLE_DEVICES="" may also give success and 0
            return self.cudaError_t.cudaErrorNoDevice, 0
        return self.cudaError_t.cudaSuccess, self.devices

    def cudaGetDeviceProperties(self, index: int) -> tuple[Any, Any]:
        return self._ok("cudaGetDeviceProperties", SimpleNamespace(name=GPU.encode() + b"\x00" * 8, major=9,
                                                                   minor=0), args=(index,))

    def cudaDriverGetVersion(self) -> tuple[Any, int]:
        return self._ok("cudaDriverGetVersion", 12040)

    def cudaSetDevice(self, index: int) -> tuple[Any]:
        return self._ok("cudaSetDevice", args=(index,))

    def cudaMalloc(self, size: int) -> tuple[Any, int]:
        pointer = self._handle()
        self.memory[pointer] = bytearray(size)
        return self._ok("cudaMalloc", pointer, args=(size,))

    def cudaFree(self, pointer: int) -> tuple[Any]:
        if pointer and self.memory.pop(pointer, None) is None:
            return (self.cudaError_t.cudaErrorInvalidDevicePointer,)
        return self._ok("cudaFree", args=(pointer,))

    def cudaMemcpyAsync(self, dst: int, src: int, size: int, kind: Any, stream: Any) -> tuple[Any]:
        assert int(stream) in self.streams, "copy on a stream that was not created"
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            assert len(self.memory[dst]) == size
            self.memory[dst][:] = ctypes.string_at(src, size)
        elif kind == self.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            assert len(self.memory[src]) == size
            ctypes.memmove(dst, bytes(self.memory[src]), size)
        else:
            return (self.cudaError_t.cudaErrorInvalidValue,)
        return self._ok("cudaMemcpyAsync", args=(int(kind),))

    def cudaStreamCreate(self) -> tuple[Any, Any]:
        stream = FakeHandle(self._handle())
        self.streams.add(int(stream))
        return self._ok("cudaStreamCreate", stream)

    def cudaStreamSynchronize(self, stream: Any) -> tuple[Any]:
        assert int(stream) in self.streams
        return self._ok("cudaStreamSynchronize")

    def cudaStreamDestroy(self, stream: Any) -> tuple[Any]:
        self.streams.remove(int(stream))
        return self._ok("cudaStreamDestroy")

    def cudaEventCreate(self) -> tuple[Any, Any]:
        event = FakeHandle(self._handle())
        self.events[int(event)] = None
        return self._ok("cudaEventCreate", event)

    def cudaEventRecord(self, event: Any, stream: Any) -> tuple[Any]:
        assert int(stream) in self.streams
        self.events[int(event)] = time.perf_counter()
        return self._ok("cudaEventRecord")

    def cudaEventElapsedTime(self, start: Any, end: Any) -> tuple[Any, float]:
        return self._ok("cudaEventElapsedTime", (self.events[int(end)] - self.events[int(start)]) * 1e3)

    def cudaEventDestroy(self, event: Any) -> tuple[Any]:
        del self.events[int(event)]
        return self._ok("cudaEventDestroy")


class FakeHandle:
    """A ``cudaStream_t`` / ``cudaEvent_t``: ``int()`` gives the handle."""

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


# ------------------------------------------------------------------------------------------ tensorrt

class FakeTensorRT:
    """The slice of ``tensorrt`` 10.x the runner uses. The "ONNX" it parses is JSON naming the I/O tensors
    (``{"inputs": {name: shape}, "outputs": {name: shape}}``), or anything else: a parse error."""

    MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE DLA_MANAGED_SRAM")
    TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    DataType = enum.Enum("DataType", "FLOAT HALF INT32")

    def __init__(self, log: CallLog, cuda: FakeCudaRuntime, version: str = "10.16.1.11") -> None:
        self.log, self.cuda, self.__version__ = log, cuda, version
        flags = "FP16 TF32 INT8" if version.split(".")[0] in ("8", "10") else "TF32"  # 11 removed weak typing
        self.BuilderFlag = enum.Enum("BuilderFlag", flags)
        self.build_fails = False
        api = self

        class Logger:
            WARNING = "WARNING"

            def __init__(self, severity: str) -> None:
                api.log.append(("Logger", severity))

        self.Logger = Logger

    @staticmethod
    def nptype(dtype: Any) -> type:
        return {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32}[dtype.name]

    def Builder(self, logger: Any) -> "FakeBuilder":  # noqa: N802 (tensorrt's constructor name)
        self.log.append(("Builder",))
        return FakeBuilder(self)

    def OnnxParser(self, network: "FakeNetwork", logger: Any) -> "FakeParser":  # noqa: N802
        self.log.append(("OnnxParser",))
        return FakeParser(self, network)

    def Runtime(self, logger: Any) -> "FakeRuntime":  # noqa: N802
        self.log.append(("Runtime",))
        return FakeRuntime(self)


class FakeNetwork:
    def __init__(self) -> None:
        self.io: list[tuple[str, list[int], str]] = []  # (name, shape, "INPUT" | "OUTPUT")


class FakeBuilder:
    def __init__(self, api: FakeTensorRT) -> None:
        self.api = api

    def create_network(self, flags: int) -> FakeNetwork:
        self.api.log.append(("create_network", flags))
        return FakeNetwork()

    def create_builder_config(self) -> "FakeConfig":
        self.api.log.append(("create_builder_config",))
        return FakeConfig(self.api)

    def build_serialized_network(self, network: FakeNetwork, config: "FakeConfig") -> bytes | None:
        self.api.log.append(("build_serialized_network",))
        if self.api.build_fails:
            return None
        return b"PLAN" + json.dumps({"io": network.io, "flags": sorted(config.flags)}).encode()


class FakeConfig:
    def __init__(self, api: FakeTensorRT) -> None:
        self.api = api
        self.flags = {"TF32"}  # TensorRT's default

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.api.log.append(("set_memory_pool_limit", pool.name, size))

    def set_flag(self, flag: Any) -> None:
        self.api.log.append(("set_flag", flag.name))
        self.flags.add(flag.name)

    def clear_flag(self, flag: Any) -> None:
        self.api.log.append(("clear_flag", flag.name))
        self.flags.discard(flag.name)


class FakeParserError:
    """Prints as TensorRT's ``ParserError.__str__``: ``In node N (func): CODE: desc``."""

    def __init__(self, node: int, func: str, code: str, desc: str) -> None:
        self._node, self._func, self._code, self._desc = node, func, code, desc

    def desc(self) -> str:
        return self._desc

    def __str__(self) -> str:
        return f"In node {self._node} ({self._func}): {self._code}: {self._desc}"


class FakeParser:
    def __init__(self, api: FakeTensorRT, network: FakeNetwork) -> None:
        self.api, self.network = api, network
        self.errors: list[FakeParserError] = []

    def parse(self, model: bytes, path: str | None = None) -> bool:
        self.api.log.append(("parse", path))
        try:
            graph = json.loads(model)
        except ValueError:
            self.errors.append(FakeParserError(3, "parseNode", "UNSUPPORTED_NODE",
                                               "No importer registered for op: FancyOp"))
            return False
        for mode in ("inputs", "outputs"):
            self.network.io += [(name, shape, mode[:-1].upper()) for name, shape in graph[mode].items()]
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> FakeParserError:
        return self.errors[index]


class FakeRuntime:
    def __init__(self, api: FakeTensorRT) -> None:
        self.api = api

    def deserialize_cuda_engine(self, plan: bytes) -> "FakeEngine | None":
        self.api.log.append(("deserialize_cuda_engine",))
        if not plan.startswith(b"PLAN"):
            return None
        return FakeEngine(self.api, json.loads(plan[4:]))


class FakeEngine:
    def __init__(self, api: FakeTensorRT, plan: dict[str, Any]) -> None:
        self.api, self.plan = api, plan
        self.io = {name: (tuple(shape), mode) for name, shape, mode in plan["io"]}

    @property
    def num_io_tensors(self) -> int:
        return len(self.io)

    def get_tensor_name(self, index: int) -> str:
        return list(self.io)[index]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.io[name][0]

    def get_tensor_dtype(self, name: str) -> Any:
        return self.api.DataType.FLOAT

    def get_tensor_mode(self, name: str) -> Any:
        return self.api.TensorIOMode[self.io[name][1]]

    def create_execution_context(self) -> "FakeContext":
        self.api.log.append(("create_execution_context",))
        return FakeContext(self)


class FakeContext:
    """Runs the "engine": inpainted = image · (1 − mask) (rounded through fp16 for an FP16 plan), aux = 2 · mask."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.api = engine, engine.api
        self.addresses: dict[str, int] = {}

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.api.log.append(("set_tensor_address", name))
        self.addresses[name] = pointer
        return True

    def _array(self, name: str) -> np.ndarray:
        return np.frombuffer(self.api.cuda.memory[self.addresses[name]], np.float32).reshape(self.engine.io[name][0])

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.api.log.append(("execute_async_v3",))
        assert isinstance(stream_handle, int) and stream_handle in self.api.cuda.streams
        assert set(self.addresses) == set(self.engine.io), "every I/O tensor needs an address"
        image, mask = self._array("image"), self._array("mask")
        inpainted = image * (1 - mask)
        if "FP16" in self.engine.plan["flags"]:
            inpainted = inpainted.astype(np.float16).astype(np.float32)
        self._array("inpainted")[...] = inpainted
        self._array("aux")[...] = 2 * mask
        return True


# ------------------------------------------------------------------------------------------ fixtures

class Fakes:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, devices: int = 1, version: str = "10.16.1.11",
                 no_device_error: bool = True) -> None:
        self.log = CallLog()
        self.cuda = FakeCudaRuntime(self.log, devices, no_device_error)
        self.trt = FakeTensorRT(self.log, self.cuda, version)
        monkeypatch.setattr(trt_runner, "cuda_runtime_module", self._import_cuda)
        monkeypatch.setattr(trt_runner, "tensorrt_module", self._import_tensorrt)

    def _import_cuda(self) -> FakeCudaRuntime:
        self.log.append(("import cuda.bindings.runtime",))
        return self.cuda

    def _import_tensorrt(self) -> FakeTensorRT:
        self.log.append(("import tensorrt",))
        return self.trt

    def tensorrt_calls(self) -> list[str]:
        """Every call into TensorRT, its import included."""
        cuda = {name for name in dir(FakeCudaRuntime) if name.startswith("cuda")}
        return [name for name in self.log.names() if name not in cuda and name != "import cuda.bindings.runtime"]


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    return Fakes(monkeypatch)


def fake_artifact(tmp_path: Path, precision: str = "fp16", resolution: int = 16, onnx: bytes | None = None
                  ) -> Artifact:
    """An "ONNX" the fake parser reads: its outputs in the order aux, inpainted; the manifest's inpainted, aux."""
    shape = [1, 3, resolution, resolution]
    mask = [1, 1, resolution, resolution]
    graph = {"inputs": {"image": shape, "mask": mask}, "outputs": {"aux": mask, "inpainted": shape}}
    path = tmp_path / "artifacts" / f"rethined_tensorrt-{precision}_{resolution}x{resolution}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx if onnx is not None else json.dumps(graph).encode())
    manifest = {"sha256": sha256_of(path), "resolution": [resolution, resolution],
                "precision": precision, "target": "tensorrt", "inputs": [{"name": "image"}, {"name": "mask"}],
                "outputs": [{"name": "inpainted"}, {"name": "aux"}]}
    return Artifact(path, manifest)


def inputs_for(resolution: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = (rng.random((1, 1, resolution, resolution)) > 0.7).astype(np.float32)
    return {"image": rng.random((1, 3, resolution, resolution), np.float32), "mask": mask}


# ------------------------------------------------------------------------------------------ availability

@pytest.mark.parametrize("error", ["cudaErrorNoDevice", "cudaSuccess"])
def test_without_a_cuda_device_no_tensorrt_object_is_ever_made(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 error: str) -> None:
    """The segfault guard: no CUDA device → TensorRT is not even imported, by availability, prepare or load."""
    fakes = Fakes(monkeypatch, devices=0, no_device_error=error != "cudaSuccess")
    runner = TensorRTRunner()
    availability = runner.availability()
    assert not availability.ok
    assert availability.reason == f"no CUDA device (cudaGetDeviceCount: {error}, 0 devices)"
    assert "NVIDIA GPU" in availability.fix and "nvidia-smi" in availability.fix
    artifact = fake_artifact(tmp_path)
    with pytest.raises(RbenchError, match="no CUDA device"):
        runner.prepare(artifact)
    with pytest.raises(RbenchError, match="no CUDA device"):
        runner.load(Prepared(artifact, str(tmp_path / "x.engine")))
    assert "cudaGetDeviceCount" in fakes.log.names()
    assert fakes.tensorrt_calls() == []
    assert not (artifact.path.parent / ".prepared").exists()


def test_a_missing_driver_library_is_no_cuda_driver(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_driver() -> tuple[Any, int]:
        raise RuntimeError("Failed to dlopen libcuda.so.1\nmore")

    monkeypatch.setattr(fakes.cuda, "cudaGetDeviceCount", no_driver)
    availability = TensorRTRunner().availability()
    assert availability.reason == "no CUDA driver (Failed to dlopen libcuda.so.1)"
    assert fakes.tensorrt_calls() == []


def test_missing_cuda_python_says_which_extra(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise MissingDependencyError("cuda-python", "tensorrt")

    monkeypatch.setattr(trt_runner, "cuda_runtime_module", missing)
    availability = TensorRTRunner().availability()
    assert availability.reason == "cuda-python is not installed (cuda.bindings.runtime)"
    assert "rethined-bench[tensorrt]" in availability.fix
    assert fakes.log == []


def test_tensorrt_without_its_libraries_names_the_import_error(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    def stub_wheel() -> None:
        try:
            raise ImportError("libnvonnxparser.so.10: cannot open shared object file: No such file or directory")
        except ImportError as exc:
            raise MissingDependencyError("tensorrt-cu12", "tensorrt") from exc

    monkeypatch.setattr(trt_runner, "tensorrt_module", stub_wheel)
    availability = TensorRTRunner().availability()
    assert availability.reason.startswith("TensorRT cannot be imported (libnvonnxparser.so.10: cannot open")
    assert "tensorrt-cu12>=10,<11" in availability.fix


@pytest.mark.parametrize("version,why", [("11.4.0.106", "TensorRT 11 removed BuilderFlag.FP16"),
                                         ("8.6.1", "named-tensor API")])
def test_only_tensorrt_10_is_available(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str,
                                       why: str) -> None:
    fakes = Fakes(monkeypatch, version=version)
    runner = TensorRTRunner()
    availability = runner.availability()
    assert not availability.ok
    assert availability.reason.startswith(f"TensorRT {version} is installed; local-tensorrt needs TensorRT 10.x")
    assert why in availability.reason and availability.fix == "pip install 'tensorrt-cu12>=10,<11'"
    with pytest.raises(RbenchError, match=why):
        runner.prepare(fake_artifact(tmp_path))
    assert "Builder" not in fakes.log.names()


def test_device_index_beyond_the_devices(fakes: Fakes) -> None:
    availability = TensorRTRunner(TensorRTRunnerSettings(device_index=2)).availability()
    assert availability.reason == "device_index is 2 but this machine has 1 CUDA device(s)"
    assert fakes.tensorrt_calls() == []


def test_settings_refuse_other_tensorrt_versions() -> None:
    with pytest.raises(RbenchError, match="which TensorRT 11 removed"):
        TensorRTRunnerSettings(tensorrt="11")
    with pytest.raises(RbenchError, match="workspace_mib must be >= 1"):
        TensorRTRunnerSettings(workspace_mib=0)


def test_available_with_cuda_and_tensorrt_10(fakes: Fakes) -> None:
    runner = TensorRTRunner()
    assert runner.availability().ok
    assert fakes.log.names()[:2] == ["import cuda.bindings.runtime", "cudaGetDeviceCount"]
    assert fakes.log.names().index("import tensorrt") > fakes.log.names().index("cudaGetDeviceCount")
    assert runner.toolchain() == (f"TensorRT 10.16.1.11 / CUDA driver 12.4 / {GPU} (sm_90) / workspace 4096 MiB, "
                                  "tf32 off")


def test_this_machine_without_the_extra_is_unavailable_with_the_fix() -> None:
    """The real importers, no fakes: without cuda-python the runner says so (and imports no TensorRT)."""
    import importlib.util

    if importlib.util.find_spec("cuda") is not None:
        pytest.skip("cuda-python is installed here")
    availability = TensorRTRunner().availability()
    assert availability.reason == "cuda-python is not installed (cuda.bindings.runtime)"
    assert "tensorrt" not in sys.modules


def test_importing_the_runner_imports_no_toolchain() -> None:
    code = ("import sys, rethined_bench.runners.tensorrt, rethined_bench.runners.ort_cuda; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ build

@pytest.mark.parametrize("precision,flags", [("fp16", ["FP16"]), ("fp32", [])])
def test_build_sets_fp16_only_for_fp16_artifacts(fakes: Fakes, tmp_path: Path, precision: str,
                                                 flags: list[str]) -> None:
    artifact = fake_artifact(tmp_path, precision)
    prepared = TensorRTRunner(TensorRTRunnerSettings(workspace_mib=512)).prepare(artifact)
    assert not prepared.cached and prepared.compile_ms is not None
    build = fakes.log[fakes.log.names().index("Builder"):]
    expected = [("Builder",), ("create_network", 0), ("OnnxParser",), ("parse", str(artifact.path)),
                ("create_builder_config",), ("set_memory_pool_limit", "WORKSPACE", 512 << 20),
                *[("set_flag", flag) for flag in flags], ("clear_flag", "TF32"), ("build_serialized_network",)]
    assert build == expected
    names = fakes.log.names()
    assert names.index("cudaGetDeviceCount") < names.index("import tensorrt") < names.index("cudaSetDevice") \
        < names.index("Logger") < names.index("Builder")
    engine = Path(prepared.handle)
    assert engine.parent == artifact.path.parent / ".tensorrt" and engine.suffix == ".engine"
    assert engine.name.startswith(f"{artifact.path.stem}-{artifact.sha256[:12]}-trt10.16.1.11-")
    assert json.loads(engine.read_bytes()[4:])["flags"] == flags  # TF32 cleared: fp32 means fp32
    receipt = prepared.receipt
    assert receipt["builder_flags"] == flags and receipt["workspace_mib"] == 512
    assert receipt["tensorrt"] == "10.16.1.11" and receipt["gpu"] == GPU and receipt["engine_bytes"] > 0
    assert receipt["toolchain"].startswith("TensorRT 10.16.1.11 / CUDA driver 12.4")
    assert not list(engine.parent.glob("*.partial"))


def test_tf32_setting_keeps_tensorrts_default(fakes: Fakes, tmp_path: Path) -> None:
    prepared = TensorRTRunner(TensorRTRunnerSettings(tf32=True)).prepare(fake_artifact(tmp_path, "fp32"))
    assert "clear_flag" not in fakes.log.names() and prepared.receipt["builder_flags"] == ["TF32"]


def test_prepare_reuses_the_cached_engine_until_it_is_gone(fakes: Fakes, tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path)
    first = TensorRTRunner().prepare(artifact)
    again = TensorRTRunner().prepare(artifact)  # another process: the build cache hits
    assert again.cached and again.handle == first.handle and again.compile_ms == first.compile_ms
    assert fakes.log.names().count("build_serialized_network") == 1
    other = TensorRTRunner(TensorRTRunnerSettings(workspace_mib=1024)).prepare(artifact)  # other build options
    assert not other.cached and other.handle != first.handle
    Path(first.handle).unlink()
    rebuilt = TensorRTRunner().prepare(artifact)
    assert not rebuilt.cached and rebuilt.handle == first.handle and Path(rebuilt.handle).is_file()
    assert fakes.log.names().count("build_serialized_network") == 3


def test_one_onnx_makes_an_fp16_and_an_fp32_engine_never_one_for_both(fakes: Fakes, tmp_path: Path) -> None:
    """The TensorRT target writes the same ONNX (same sha256) for both precisions: the build cache must tell them
    apart, or an fp32 cell would silently run the cached fp16 engine."""
    fp16, fp32 = fake_artifact(tmp_path, "fp16"), fake_artifact(tmp_path, "fp32")
    assert fp16.sha256 == fp32.sha256
    half, full = TensorRTRunner().prepare(fp16), TensorRTRunner().prepare(fp32)
    assert not full.cached and full.handle != half.handle
    assert json.loads(Path(full.handle).read_bytes()[4:])["flags"] == []
    assert fakes.log.names().count("build_serialized_network") == 2


def test_a_parse_failure_reports_the_parsers_errors(fakes: Fakes, tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path, onnx=b"\x08\x07not json")
    with pytest.raises(RbenchError) as raised:
        TensorRTRunner().prepare(artifact)
    assert str(raised.value) == (f"TensorRT cannot parse {artifact.path.name}: In node 3 (parseNode): "
                                 "UNSUPPORTED_NODE: No importer registered for op: FancyOp")
    assert "build_serialized_network" not in fakes.log.names()
    assert not (artifact.path.parent / ".tensorrt").exists()


def test_a_failed_build_is_an_error(fakes: Fakes, tmp_path: Path) -> None:
    fakes.trt.build_fails = True
    with pytest.raises(RbenchError, match="could not build an engine"):
        TensorRTRunner().prepare(fake_artifact(tmp_path))


def test_build_refuses_other_artifacts(fakes: Fakes, tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path)
    with pytest.raises(RbenchError, match="not int8"):
        TensorRTRunner().build(Artifact(artifact.path, artifact.manifest | {"precision": "int8"}))
    package = Artifact(tmp_path / "model.mlpackage", artifact.manifest)
    with pytest.raises(RbenchError, match="from .onnx artifacts"):
        TensorRTRunner().build(package)


# ------------------------------------------------------------------------------------------ load and infer

def test_load_and_infer_in_tensorrts_order_with_outputs_in_manifest_order(fakes: Fakes, tmp_path: Path) -> None:
    runner = TensorRTRunner()
    prepared = runner.prepare(fake_artifact(tmp_path, "fp32"))
    start = len(fakes.log)
    model = runner.load(prepared)
    load = fakes.log.names()[start:]
    assert load[:6] == ["cudaSetDevice", "cudaFree", "Logger", "Runtime", "deserialize_cuda_engine",
                        "create_execution_context"]
    assert fakes.log[start + 1] == ("cudaFree", 0)  # the CUDA context, before any TensorRT object
    io = [call[1] for call in fakes.log[start:] if call[0] == "set_tensor_address"]
    assert io == ["image", "mask", "aux", "inpainted"]  # every I/O tensor by name, in the engine's order
    assert load[6:] == ["cudaMalloc", "set_tensor_address"] * 4 + ["cudaStreamCreate", "cudaEventCreate",
                                                                    "cudaEventCreate"]
    assert set(model.load_stages_ms) == {"read", "cuda_context", "runtime", "deserialize", "context", "buffers"}

    start = len(fakes.log)
    inputs = inputs_for()
    outputs = model.infer(inputs)
    run = [call for call in fakes.log[start:]]
    assert [call[0] for call in run] == ["cudaMemcpyAsync", "cudaMemcpyAsync", "cudaEventRecord", "execute_async_v3",
                                         "cudaEventRecord", "cudaMemcpyAsync", "cudaMemcpyAsync",
                                         "cudaStreamSynchronize", "cudaEventElapsedTime"]
    assert [call[1] for call in run if call[0] == "cudaMemcpyAsync"] == [H2D, H2D, D2H, D2H]
    inpainted, aux = outputs
    np.testing.assert_array_equal(inpainted, inputs["image"] * (1 - inputs["mask"]))
    np.testing.assert_array_equal(aux, 2 * inputs["mask"])
    assert len(model.gpu_compute_ms) == 1 and model.gpu_compute_ms[0] >= 0
    again = model.infer(inputs)  # fresh host arrays each time
    assert again[0] is not inpainted and np.array_equal(again[0], inpainted)


def test_infer_checks_input_shapes(fakes: Fakes, tmp_path: Path) -> None:
    runner = TensorRTRunner()
    model = runner.load(runner.prepare(fake_artifact(tmp_path)))
    with pytest.raises(RbenchError, match=r"input image has shape \(1, 3, 8, 8\); the engine takes"):
        model.infer(inputs_for(8))


def test_a_model_frees_its_device_memory(fakes: Fakes, tmp_path: Path) -> None:
    runner = TensorRTRunner()
    model = runner.load(runner.prepare(fake_artifact(tmp_path)))
    model.infer(inputs_for())
    assert len(fakes.cuda.memory) == 4 and fakes.cuda.streams and fakes.cuda.events
    del model
    gc.collect()
    assert fakes.cuda.memory == {} and fakes.cuda.streams == set() and fakes.cuda.events == {}


def test_load_needs_a_prepared_engine_the_runtime_accepts(fakes: Fakes, tmp_path: Path) -> None:
    runner = TensorRTRunner()
    artifact = fake_artifact(tmp_path)
    with pytest.raises(RbenchError, match="no TensorRT engine at .*prepare the artifact first"):
        runner.load(Prepared(artifact, str(artifact.path)))
    foreign = tmp_path / "other.engine"
    foreign.write_bytes(b"an engine from another TensorRT")
    with pytest.raises(RbenchError, match="cannot deserialise other.engine"):
        runner.load(Prepared(artifact, str(foreign)))


def test_load_refuses_an_engine_that_is_not_the_artifacts(fakes: Fakes, tmp_path: Path) -> None:
    runner = TensorRTRunner()
    artifact = fake_artifact(tmp_path)
    prepared = runner.prepare(artifact)
    renamed = Artifact(artifact.path, artifact.manifest | {"outputs": [{"name": "painted"}]})
    with pytest.raises(RbenchError, match="the engine has no output 'painted'"):
        runner.load(Prepared(renamed, prepared.handle, receipt=prepared.receipt))
    gc.collect()
    assert fakes.cuda.memory == {}  # a failed load frees what it allocated


def test_the_measurement_protocol_runs_through_the_fakes(fakes: Fakes, tmp_path: Path) -> None:
    runner = TensorRTRunner()
    prepared = runner.prepare(fake_artifact(tmp_path, "fp16", 32))
    record = measure_process(runner, prepared, Protocol(processes=1, warmup=1, min_iters=3, min_time_s=0.0))
    assert len(record.samples_ms) >= 3 and record.first_inference_ms > 0
    assert record.load_cold_ms > 0 and record.load_warm_ms > 0
    assert fakes.log.names().count("deserialize_cuda_engine") == 2  # cold, then warm after the first was freed
    gc.collect()
    assert fakes.cuda.memory == {}
    described = runner.describe()
    assert described["builder_flags"] == ["FP16"] and described["gpu"] == GPU
    assert described["tensorrt"] == "10.16.1.11" and described["cuda_driver"] == "12.4"
    assert "included" in described["input_copies"] and "included" in described["output_copies"]
    assert [set(stages) for stages in described["load_stages_ms"]] == [set(runner.load_stages_ms[0])] * 2
    gpu = described["gpu_compute_ms"]
    assert gpu["inferences"] == len(record.samples_ms) + 1 and gpu["median"] >= 0  # warm-up + timed; not the first
    json.dumps(described)  # stored with the result
