"""ONNX Runtime on this machine's NVIDIA GPU (``local-ort-cuda``): the CUDA execution provider of onnxruntime-gpu,
timed in fresh processes like ``local-ort``.

A session that silently runs on the CPU is an error, never a number: ORT skips a CUDA provider it cannot create
(missing CUDA or cuDNN libraries, no GPU) with a warning and carries on on the CPU, so :meth:`OrtCudaRunner.load`
checks the session's providers, and by default ``session.disable_cpu_ep_fallback`` makes ORT refuse to place any
node on the CPU. With I/O binding (the default) inputs are bound from host arrays and outputs to CUDA memory; the
copies both ways stay inside the timed call, and the run is synchronised before it returns, so the latency is
CUDA-synchronised wall time, comparable with ``local-tensorrt``'s.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import RbenchError
from ..settings import setting
from .base import Availability, LoadedModel, LocalRunner, Prepared
from .ort import GRAPH_OPT_LEVELS, create_session

PROVIDER = "CUDAExecutionProvider"
BIND_DEVICE = "cuda"  # where outputs are bound: ORT's device name for CUDA memory
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
NO_CPU_NODES = {"session.disable_cpu_ep_fallback": "1"}


@dataclass(frozen=True)
class OrtCudaSettings:
    device_id: int = setting(0, help="the CUDA device ordinal")
    cudnn_conv_algo_search: str = setting("EXHAUSTIVE", help="cuDNN's convolution algorithm choice: EXHAUSTIVE "
                                                             "(ORT's default: benchmarks them in the first "
                                                             "inference), HEURISTIC or DEFAULT")
    tf32: bool = setting(False, help="let fp32 convolutions and matmuls use TF32 (ORT's default is on; off: fp32 "
                                     "means fp32)")
    io_binding: bool = setting(True, help="bind inputs from host arrays and outputs to CUDA memory and run with "
                                          "run_with_iobinding; false: session.run")
    cpu_nodes: bool = setting(False, help="let nodes the CUDA provider cannot run fall back to the CPU provider "
                                          "(default: refused, the session fails to load)")
    graph_opt_level: str = setting("all", help="disable, basic, extended or all")

    def __post_init__(self) -> None:
        if self.cudnn_conv_algo_search not in CONV_ALGO_SEARCH:
            raise RbenchError(f"cudnn_conv_algo_search must be one of {', '.join(CONV_ALGO_SEARCH)}, "
                              f"not {self.cudnn_conv_algo_search!r}")
        if self.graph_opt_level not in GRAPH_OPT_LEVELS:
            raise RbenchError(f"graph_opt_level must be one of {', '.join(GRAPH_OPT_LEVELS)}, "
                              f"not {self.graph_opt_level!r}")
        if self.device_id < 0:
            raise RbenchError(f"device_id must be >= 0, not {self.device_id}")


def _one_node_model(op: str, dtype: np.dtype, shapes: dict[str, list[int]]) -> bytes:
    """A serialized ONNX model of one ``op`` node over inputs ``shapes`` (one output ``y``)."""
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inputs = [onnx.helper.make_tensor_value_info(name, elem, shape) for name, shape in shapes.items()]
    output = onnx.helper.make_tensor_value_info("y", elem, None)
    graph = onnx.helper.make_graph([onnx.helper.make_node(op, list(shapes), ["y"])], op.lower(), inputs, [output])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    model.ir_version = 9  # what opset 18 needs, and old enough for any onnxruntime-gpu that runs opset 18
    return model.SerializeToString()


def _best_seconds(session: ort.InferenceSession, arrays: dict[str, np.ndarray], device_type: str, device_id: int,
                  repeats: int) -> float:
    """The fastest of ``repeats`` runs with inputs and output resident on the device (no copies timed)."""
    binding = session.io_binding()
    for name, array in arrays.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device_type, device_id))
    binding.bind_output("y", device_type, device_id)
    session.run_with_iobinding(binding)  # kernel selection and allocation
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        session.run_with_iobinding(binding)  # returns after the provider's stream is synchronised
        best = min(best, time.perf_counter() - begin)
    return best


def measure_ort_ceilings(providers: list[Any], device_type: str, device_id: int = 0, *, matmul_n: int = 8192,
                         stream_mib: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """Peak fp32 and fp16 GFLOP/s (an N×N MatMul) and memory bandwidth GB/s (an elementwise Add reads two arrays
    and writes one) of the device ``providers`` run on, measured through ONNX Runtime itself, so the roofline's
    ceilings are what this runtime reaches on this card with these provider options (TF32 included)."""
    ceilings: dict[str, Any] = {}
    for precision, dtype in (("fp32", np.float32), ("fp16", np.float16)):
        model = _one_node_model("MatMul", dtype, {"a": [matmul_n, matmul_n], "b": [matmul_n, matmul_n]})
        session = ort.InferenceSession(model, providers=providers)
        square = np.random.default_rng(0).random((matmul_n, matmul_n), dtype=np.float32).astype(dtype)
        seconds = _best_seconds(session, {"a": square, "b": square}, device_type, device_id, repeats)
        ceilings[f"{precision}_gflops"] = round(2 * matmul_n**3 / seconds / 1e9, 1)
    elements = stream_mib * 2**20 // 4
    session = ort.InferenceSession(_one_node_model("Add", np.float32, {"a": [elements], "b": [elements]}),
                                   providers=providers)
    stream = np.ones(elements, dtype=np.float32)
    seconds = _best_seconds(session, {"a": stream, "b": stream}, device_type, device_id, repeats)
    ceilings["mem_gbps"] = round(3 * stream.nbytes / seconds / 1e9, 2)
    ceilings["method"] = (f"ONNX Runtime {ort.__version__}: MatMul {matmul_n}^3 fp32 and fp16, Add over "
                          f"{stream_mib} MiB (2 reads + 1 write), device-resident I/O, best of {repeats}")
    return ceilings


class IoBoundModel(LoadedModel):
    """A session run through an I/O binding: each ``infer`` binds the inputs from host arrays (``bind_cpu_input``;
    ORT copies them to the device inside the run), runs ``run_with_iobinding`` with the outputs bound to
    ``device_type`` memory, synchronises the outputs and copies them to the host in manifest order. Every copy is
    inside the call; on ``"cpu"`` the same code runs with ORT's CPU provider (tests)."""

    def __init__(self, session: ort.InferenceSession, output_names: list[str], device_type: str,
                 device_id: int) -> None:
        self.session = session
        self.binding = session.io_binding()
        for name in output_names:
            self.binding.bind_output(name, device_type, device_id)

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, array in inputs.items():
            self.binding.bind_cpu_input(name, np.ascontiguousarray(array))
        self.session.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()
        return self.binding.copy_outputs_to_cpu()


class RunModel(LoadedModel):
    """``session.run`` with numpy inputs and outputs (ORT copies both ways and synchronises inside the call)."""

    def __init__(self, session: ort.InferenceSession, output_names: list[str]) -> None:
        self.session = session
        self.output_names = output_names

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, inputs)


class OrtCudaRunner(LocalRunner):
    """ONNX Runtime's CUDA execution provider on this machine's GPU. Load time = ``InferenceSession()`` (file read,
    graph optimisation, CUDA provider creation, weights to the GPU); cuDNN's algorithm search falls in the first
    inference, which the protocol times apart."""

    name = "local-ort-cuda"
    target = "onnx"
    settings_class = OrtCudaSettings

    def availability(self) -> Availability:
        if PROVIDER not in ort.get_available_providers():
            return Availability(False, f"onnxruntime {ort.__version__} has no {PROVIDER} (the CPU-only "
                                       "onnxruntime package is installed)",
                                "pip install 'rethined-bench[cuda]', then pip uninstall -y onnxruntime and pip "
                                "install --force-reinstall --no-deps onnxruntime-gpu (both provide the onnxruntime "
                                "module)")
        return Availability(True)

    @property
    def provider_options(self) -> dict[str, str]:
        return {"device_id": str(self.settings.device_id),
                "cudnn_conv_algo_search": self.settings.cudnn_conv_algo_search,
                "use_tf32": "1" if self.settings.tf32 else "0"}

    def load(self, prepared: Prepared) -> LoadedModel:
        """A session on the CUDA provider alone, refused if ORT put it (or, unless ``cpu_nodes``, any node of it)
        on the CPU."""
        available = self.availability()
        if not available.ok:
            raise RbenchError(f"{available.reason}; {available.fix}")
        try:
            session = create_session(Path(prepared.handle), graph_opt_level=self.settings.graph_opt_level,
                                     providers=[(PROVIDER, self.provider_options)],
                                     config=None if self.settings.cpu_nodes else NO_CPU_NODES)
        except RbenchError as exc:
            if self.settings.cpu_nodes:
                raise
            raise RbenchError(f"{exc} (local-ort-cuda refuses CPU nodes unless cpu_nodes = true)") from exc
        if session.get_providers()[0] != PROVIDER:
            raise RbenchError(f"ONNX Runtime could not create {PROVIDER} and fell back to the CPU (it needs an "
                              "NVIDIA GPU and the CUDA and cuDNN libraries its onnxruntime-gpu build expects)")
        names = [spec["name"] for spec in prepared.artifact.manifest["outputs"]]
        if self.settings.io_binding:
            return IoBoundModel(session, names, BIND_DEVICE, self.settings.device_id)
        return RunModel(session, names)

    def runtime_ceilings(self, cache_dir: Path) -> dict[str, Any]:
        """This GPU's peaks through the CUDA provider with the profile's options, cached per host and device."""
        from ..measure.roofline import cached_ceilings

        key = f"{socket.gethostname()}|{PROVIDER}:{self.settings.device_id}|{self.provider_options}"
        return cached_ceilings(cache_dir, key, lambda: measure_ort_ceilings(
            [(PROVIDER, self.provider_options)], BIND_DEVICE, self.settings.device_id))

    def describe(self) -> dict[str, Any]:
        bound = self.settings.io_binding
        return {
            "execution_provider": PROVIDER,
            "provider_options": self.provider_options,
            "cpu_nodes": "allowed" if self.settings.cpu_nodes else "refused (session.disable_cpu_ep_fallback)",
            "graph_optimization_level": self.settings.graph_opt_level,
            "io_binding": bound,
            "input_copies": ("included: bound from host numpy arrays (bind_cpu_input), copied to the GPU inside "
                             "run_with_iobinding") if bound else "included: numpy inputs copied inside session.run",
            "output_copies": ("included: bound to CUDA memory, synchronize_outputs, then copy_outputs_to_cpu"
                              ) if bound else "included: session.run returns numpy outputs",
            "first_inference": f"includes cuDNN's {self.settings.cudnn_conv_algo_search} convolution algorithm "
                               "choice and CUDA kernel loading",
            "onnxruntime": ort.__version__,
        }
