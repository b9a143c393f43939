"""The ONNX Runtime CUDA runner without a GPU: availability on this machine, the refusal of sessions that end up on
the CPU (real ORT, which skips a CUDA provider it cannot create), and the I/O-binding path run by ORT's real CPU
provider, where binding to CPU memory is allowed: only the device name differs from the CUDA run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rethined_bench.artifact import Artifact
from rethined_bench.errors import RbenchError
from rethined_bench.measure.protocol import Protocol, measure_process
from rethined_bench.runners import ort_cuda
from rethined_bench.runners.base import Prepared
from rethined_bench.runners.ort import create_session
from rethined_bench.runners.ort_cuda import IoBoundModel, OrtCudaRunner, OrtCudaSettings, RunModel

HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def tiny_artifact(directory: Path, resolution: int = 16) -> Artifact:
    """inpainted = image · (1 − mask), aux = mask; the graph lists aux first, the manifest inpainted first."""
    image, mask = [1, 3, resolution, resolution], [1, 1, resolution, resolution]
    graph = helper.make_graph(
        [helper.make_node("Sub", ["one", "mask"], ["keep"]), helper.make_node("Mul", ["image", "keep"], ["inpainted"]),
         helper.make_node("Identity", ["mask"], ["aux"])], "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, image),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, mask)],
        [helper.make_tensor_value_info("aux", TensorProto.FLOAT, mask),
         helper.make_tensor_value_info("inpainted", TensorProto.FLOAT, image)],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = directory / f"tiny_onnx-fp32_{resolution}x{resolution}.onnx"
    onnx.save(model, str(path))
    manifest = {"sha256": "ab12" * 16, "resolution": [resolution, resolution], "precision": "fp32", "target": "onnx",
                "inputs": [{"name": "image"}, {"name": "mask"}], "outputs": [{"name": "inpainted"}, {"name": "aux"}]}
    return Artifact(path, manifest)


@pytest.fixture
def artifact(tmp_path: Path) -> Artifact:
    return tiny_artifact(tmp_path)


def inputs_for(resolution: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"image": rng.random((1, 3, resolution, resolution), np.float32),
            "mask": (rng.random((1, 1, resolution, resolution)) > 0.5).astype(np.float32)}


class ReportsCuda:
    """A real CPU session that reports the CUDA provider first, as a session on the GPU would."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@pytest.fixture
def cuda_on_cpu(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The runner's CUDA path run by ORT's CPU provider: the provider is "available", sessions are created by the
    real ``create_session`` on the CPU (what the runner asked for is recorded), outputs are bound to CPU memory."""
    requests: list[dict[str, Any]] = []

    def on_cpu(path: Path, **options: Any) -> ReportsCuda:
        requests.append(options)
        return ReportsCuda(create_session(path, graph_opt_level=options["graph_opt_level"]))

    monkeypatch.setattr(ort_cuda.ort, "get_available_providers", lambda: [ort_cuda.PROVIDER, "CPUExecutionProvider"])
    monkeypatch.setattr(ort_cuda, "create_session", on_cpu)
    monkeypatch.setattr(ort_cuda, "BIND_DEVICE", "cpu")
    return requests


# ------------------------------------------------------------------------------------------ availability, settings

@pytest.mark.skipif(HAS_CUDA_EP, reason="this onnxruntime has the CUDA provider")
def test_unavailable_here_with_the_fix(artifact: Artifact) -> None:
    runner = OrtCudaRunner()
    availability = runner.availability()
    assert not availability.ok
    assert availability.reason.endswith("has no CUDAExecutionProvider (the CPU-only onnxruntime package is installed)")
    assert "rethined-bench[cuda]" in availability.fix and "pip uninstall -y onnxruntime" in availability.fix
    assert "--force-reinstall --no-deps onnxruntime-gpu" in availability.fix
    with pytest.raises(RbenchError, match="has no CUDAExecutionProvider"):
        runner.load(Prepared(artifact, str(artifact.path)))


def test_settings_are_checked() -> None:
    with pytest.raises(RbenchError, match="cudnn_conv_algo_search must be one of EXHAUSTIVE, HEURISTIC, DEFAULT"):
        OrtCudaSettings(cudnn_conv_algo_search="FAST")
    with pytest.raises(RbenchError, match="graph_opt_level must be one of"):
        OrtCudaSettings(graph_opt_level="max")
    with pytest.raises(RbenchError, match="device_id must be >= 0"):
        OrtCudaSettings(device_id=-1)


def test_provider_options_are_explicit() -> None:
    runner = OrtCudaRunner(OrtCudaSettings(device_id=1, cudnn_conv_algo_search="HEURISTIC", tf32=True))
    assert runner.provider_options == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "1"}
    assert OrtCudaRunner().provider_options["use_tf32"] == "0"


# ------------------------------------------------------------------------------------------ no silent CPU run

@pytest.mark.skipif(HAS_CUDA_EP, reason="ORT would really create the CUDA provider")
def test_a_session_that_lands_on_the_cpu_is_refused(artifact: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real ORT skips a CUDA provider it cannot create and carries on on the CPU: the runner refuses that, by
    ORT's own check (no CPU nodes, the default) or by the session's providers."""
    monkeypatch.setattr(ort_cuda.ort, "get_available_providers", lambda: [ort_cuda.PROVIDER, "CPUExecutionProvider"])
    prepared = Prepared(artifact, str(artifact.path))
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        with pytest.raises(RbenchError, match="fallback to CPU EP has been explicitly disabled.*refuses CPU nodes "
                                              "unless cpu_nodes = true"):
            OrtCudaRunner().load(prepared)
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        with pytest.raises(RbenchError, match="could not create CUDAExecutionProvider and fell back to the CPU"):
            OrtCudaRunner(OrtCudaSettings(cpu_nodes=True)).load(prepared)


def test_create_session_passes_provider_options_and_config_to_ort(artifact: Artifact,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[dict[str, Any]] = []

    def recorded(*args: Any, **kwargs: Any) -> ort.InferenceSession:
        created.append(kwargs)
        return real(*args, **kwargs)

    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", recorded)
    session = create_session(artifact.path, threads=1, providers=[("CPUExecutionProvider", {})])
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert created[0]["providers"] == [("CPUExecutionProvider", {})]
    assert created[0]["enable_fallback"] == 0  # no retry on the CPU provider after a provider error
    with pytest.raises(RbenchError, match="Conflicting session configuration"):  # ORT read the config entry
        create_session(artifact.path, threads=1, config=ort_cuda.NO_CPU_NODES)


# ------------------------------------------------------------------------------------------ the binding path

class Recorded:
    """An object whose method calls are logged by name, then forwarded."""

    def __init__(self, target: Any, log: list[str]) -> None:
        self.target, self.log = target, log

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.target, name)

        def call(*args: Any) -> Any:
            self.log.append(name)
            return method(*(a.target if isinstance(a, Recorded) else a for a in args))
        return call


def test_io_binding_on_cpu_memory_returns_the_manifest_outputs(artifact: Artifact) -> None:
    session = create_session(artifact.path, threads=1)
    log: list[str] = []
    model = IoBoundModel(session, ["inpainted", "aux"], "cpu", 0)
    model.session, model.binding = Recorded(session, log), Recorded(model.binding, log)
    inputs = inputs_for()
    inpainted, aux = model.infer(inputs)
    assert log == ["bind_cpu_input", "bind_cpu_input", "run_with_iobinding", "synchronize_outputs",
                   "copy_outputs_to_cpu"]
    np.testing.assert_array_equal(inpainted, inputs["image"] * (1 - inputs["mask"]))
    np.testing.assert_array_equal(aux, inputs["mask"])
    assert [o.name for o in session.get_outputs()] == ["aux", "inpainted"]  # the graph's order is not ours
    changed = inputs | {"mask": np.zeros_like(inputs["mask"])}
    np.testing.assert_array_equal(model.infer(changed)[0], inputs["image"])  # inputs are bound afresh each run
    np.testing.assert_array_equal(model.infer(inputs)[0], inpainted)


def test_session_run_mode_returns_the_same(artifact: Artifact) -> None:
    session = create_session(artifact.path, threads=1)
    inputs = inputs_for()
    bound = IoBoundModel(session, ["inpainted", "aux"], "cpu", 0).infer(inputs)
    plain = RunModel(session, ["inpainted", "aux"]).infer(inputs)
    for a, b in zip(bound, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_asks_for_cuda_alone_without_cpu_nodes(artifact: Artifact, cuda_on_cpu: list[dict[str, Any]]) -> None:
    model = OrtCudaRunner().load(Prepared(artifact, str(artifact.path)))
    assert cuda_on_cpu == [{"graph_opt_level": "all", "config": {"session.disable_cpu_ep_fallback": "1"},
                            "providers": [("CUDAExecutionProvider", {"device_id": "0",
                                                                     "cudnn_conv_algo_search": "EXHAUSTIVE",
                                                                     "use_tf32": "0"})]}]
    assert isinstance(model, IoBoundModel)
    OrtCudaRunner(OrtCudaSettings(cpu_nodes=True)).load(Prepared(artifact, str(artifact.path)))
    assert cuda_on_cpu[-1]["config"] is None
    plain = OrtCudaRunner(OrtCudaSettings(io_binding=False)).load(Prepared(artifact, str(artifact.path)))
    assert isinstance(plain, RunModel) and plain.output_names == ["inpainted", "aux"]


@pytest.mark.parametrize("io_binding", [True, False])
def test_the_measurement_protocol_runs_the_cuda_path_on_cpu(tmp_path: Path, cuda_on_cpu: list[dict[str, Any]],
                                                            io_binding: bool) -> None:
    artifact = tiny_artifact(tmp_path, 32)
    runner = OrtCudaRunner(OrtCudaSettings(io_binding=io_binding))
    record = measure_process(runner, Prepared(artifact, str(artifact.path)),
                             Protocol(processes=1, warmup=1, min_iters=3, min_time_s=0.0))
    assert len(record.samples_ms) >= 3 and record.load_cold_ms > 0 and record.load_warm_ms > 0
    assert len(cuda_on_cpu) == 2  # cold and warm loads
    described = runner.describe()
    assert described["io_binding"] is io_binding and described["execution_provider"] == "CUDAExecutionProvider"
    assert described["input_copies"].startswith("included") and described["output_copies"].startswith("included")
    assert ("copy_outputs_to_cpu" in described["output_copies"]) is io_binding
    assert described["cpu_nodes"].startswith("refused")


def test_ceilings_are_measured_through_the_runtime_on_device_resident_buffers():
    """The GPU roofline's ceilings come from ONNX Runtime itself (MatMul fp32/fp16, an Add stream); the same code
    with the CPU provider and CPU memory proves the graphs, bindings and arithmetic here."""
    ceilings = ort_cuda.measure_ort_ceilings(["CPUExecutionProvider"], "cpu", matmul_n=128, stream_mib=4, repeats=2)
    assert ceilings["fp32_gflops"] > 0 and ceilings["fp16_gflops"] > 0 and ceilings["mem_gbps"] > 0
    assert "MatMul 128^3" in ceilings["method"] and "4 MiB" in ceilings["method"]


def test_runtime_ceilings_are_measured_once_per_device_and_options(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ort_cuda, "measure_ort_ceilings",
                        lambda providers, device, device_id: calls.append(providers) or {"fp16_gflops": 1.0})
    first = OrtCudaRunner(OrtCudaSettings()).runtime_ceilings(tmp_path)
    again = OrtCudaRunner(OrtCudaSettings()).runtime_ceilings(tmp_path)
    OrtCudaRunner(OrtCudaSettings(tf32=True)).runtime_ceilings(tmp_path)
    assert first == again == {"fp16_gflops": 1.0}
    assert [dict(p)["CUDAExecutionProvider"]["use_tf32"] for p in calls] == ["0", "1"]
