"""The real qai-hub 0.56 client against the offline AI Hub of ``fake_aihub``: upload, compile, profile, outputs,
errors, timeouts, re-attaching, and a service shared with another process. These tests pin the fake to the
client's behaviour, so the ``aihub`` runner's tests can trust it."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

qai_hub = pytest.importorskip("qai_hub", reason="qai-hub is not installed (extra 'qnn')")

# after the skip: these import qai_hub
from qai_hub import public_rest_api  # noqa: E402
from qai_hub.client import InternalError, ModelMetadataKey, RateLimitedError, SourceModelType, UserError  # noqa: E402

from fake_aihub import (  # noqa: E402,F401
    API_URL,
    EndlessWait,
    FakeHub,
    UnexpectedNetworkCall,
    fake_hub_fixture,
    make_client,
)

SIZE = 64
INPUT_SPECS = {"image": ((1, 3, SIZE, SIZE), "float32"), "mask": ((1, 1, SIZE, SIZE), "float32")}
COMPILE_OPTIONS = "--target_runtime qnn_dlc --qairt_version 2.42"
S21 = qai_hub.Device("Samsung Galaxy S21")
DFT_FAILURE = "Failed to convert the model: the QNN converter does not support op DFT (node /spectrum/DFT)."

SCALARS = {"estimated_inference_time", "estimated_inference_peak_memory", "first_load_time", "first_load_peak_memory",
           "warm_load_time", "warm_load_peak_memory", "compile_time", "compile_peak_memory"}
STAGES = ("compile", "first_load", "warm_load", "inference")
RANGES = {f"{stage}_memory_{kind}_range" for stage in STAGES for kind in ("increase", "peak")}
TIME_LISTS = {f"all_{stage}_times" for stage in STAGES}


class TinyInpainter(torch.nn.Module):
    """Image and mask in, image out: convolutions, a ReLU and element-wise ops, like the real networks' layers."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.decode = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        known = image * (1 - mask)
        return known + self.decode(torch.relu(self.encode(torch.cat([known, mask], dim=1)))) * mask


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.manual_seed(0)
    example = (torch.rand(1, 3, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE))
    with warnings.catch_warnings():  # the TorchScript exporter, chosen on purpose, is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(TinyInpainter().eval(), example, str(path), input_names=["image", "mask"],
                          output_names=["painted"], dynamo=False, opset_version=17)
    return path


@pytest.fixture(scope="module")
def dft_onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A graph with a DFT node, the op the failure rule names."""
    node = onnx.helper.make_node("DFT", ["signal"], ["spectrum"], name="/spectrum/DFT", onesided=1)
    graph = onnx.helper.make_graph(
        [node], "dft", [onnx.helper.make_tensor_value_info("signal", onnx.TensorProto.FLOAT, [1, SIZE, 1])],
        [onnx.helper.make_tensor_value_info("spectrum", onnx.TensorProto.FLOAT, [1, SIZE // 2 + 1, 2])])
    path = tmp_path_factory.mktemp("onnx") / "dft.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return path


def sample_inputs() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(7)
    mask = (rng.random((1, 1, SIZE, SIZE)) > 0.7).astype(np.float32)
    return {"image": [rng.random((1, 3, SIZE, SIZE), dtype=np.float32)], "mask": [mask]}


def compile_tiny(client: qai_hub.Client, onnx_path: Path, options: str = COMPILE_OPTIONS,
                 device: qai_hub.Device = S21) -> qai_hub.CompileJob:
    return client.submit_compile_job(str(onnx_path), device, input_specs=INPUT_SPECS, options=options)


def test_compile_resolves_the_device_and_seeds_the_target(fake_hub: FakeHub, onnx_path: Path,
                                                          tmp_path: Path) -> None:
    client = make_client()
    job = compile_tiny(client, onnx_path, device=qai_hub.Device(attributes="chipset:qualcomm-snapdragon-888"))
    assert job.device.name == "Samsung Galaxy S21" and "framework:qnn" in job.device.attributes
    target = job.get_target_model()  # seeded: there before the compile finishes
    assert target.model_type is SourceModelType.QNN_DLC
    assert job.wait().success
    assert job.get_target_shapes() == INPUT_SPECS
    assert target.metadata[ModelMetadataKey.QAIRT_SDK_VERSION] == "2.42"
    assert Path(job.download_target_model(str(tmp_path))).read_bytes() == onnx_path.read_bytes()
    with pytest.raises(UserError, match="is not available"):
        compile_tiny(client, onnx_path, device=qai_hub.Device("Samsung Galaxy S99"))


@pytest.mark.parametrize(("options", "model_type"), [
    ("--target_runtime qnn_context_binary", SourceModelType.QNN_CONTEXT_BINARY),
    ("", SourceModelType.TFLITE),  # the service's default runtime
])
def test_target_model_type_follows_the_target_runtime(fake_hub: FakeHub, onnx_path: Path, options: str,
                                                       model_type: SourceModelType) -> None:
    assert compile_tiny(make_client(), onnx_path, options).get_target_model().model_type is model_type


def test_module_global_client_reads_the_fake_ini(fake_hub: FakeHub) -> None:
    names = [d.name for d in qai_hub.get_devices(attributes="chipset:qualcomm-snapdragon-888")]
    assert names == ["Samsung Galaxy S21", "Samsung Galaxy S21 Ultra"]
    assert set(fake_hub.tokens) == {"fake-aihub-token"}


def test_profile_with_inputs_runs_the_onnx(fake_hub: FakeHub, onnx_path: Path) -> None:
    client = make_client("secret-token")
    target = compile_tiny(client, onnx_path).get_target_model()
    job = client.submit_inference_job(target, S21, inputs=sample_inputs(), options="--max_profiler_iterations 20")
    assert job.wait(timeout=600).success
    assert job.shapes == INPUT_SPECS

    profile = job.download_profile()
    summary = profile["execution_summary"]
    assert set(summary) == SCALARS | RANGES | TIME_LISTS
    assert len(summary["all_inference_times"]) == 20
    assert summary["estimated_inference_time"] == min(summary["all_inference_times"])
    assert 4000 < np.median(summary["all_inference_times"]) < 4400
    assert {layer["type"] for layer in profile["execution_detail"]} >= {"Conv2d", "Relu", "ElementWiseAdd"}
    detail = public_rest_api.get_job_results(client.config, job.job_id).inference_job_result.detail
    assert [(t.name, t.version) for t in detail.tool_versions] == [("QAIRT", "2.42")]

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {name: values[0] for name, values in sample_inputs().items()})[0]
    np.testing.assert_array_equal(job.download_output_data()["painted"][0], expected)

    assert set(fake_hub.tokens) == {"secret-token"}
    assert "secret-token" not in fake_hub.state_path.read_text()
    calls = fake_hub.calls()
    assert (calls["create_compile_job"], calls["create_inference_job"], calls["create_and_upload_dataset"]) == (1, 1, 1)


@pytest.mark.parametrize(("version", "keys", "layer_times"), [
    ("0.0", SCALARS | RANGES, False),  # legacy: most values None
    ("1.0", SCALARS, False),
    ("1.1", SCALARS | RANGES, False),
    ("1.2", SCALARS | RANGES | TIME_LISTS, False),
    ("1.8", SCALARS | RANGES | TIME_LISTS, True),
])
def test_profile_dict_per_detail_version(fake_hub: FakeHub, onnx_path: Path, version: str, keys: set[str],
                                         layer_times: bool) -> None:
    fake_hub.configure(detail_version=version)
    client = make_client()
    profile = client.submit_inference_job(compile_tiny(client, onnx_path).get_target_model(), S21).download_profile()
    summary = profile["execution_summary"]
    assert set(summary) == keys
    assert isinstance(summary["estimated_inference_time"], int)
    if version == "0.0":
        assert {key for key, value in summary.items() if value is not None} == {
            "estimated_inference_time", "first_load_time", "compile_peak_memory"}
    if "all_inference_times" in summary:
        assert len(summary["all_inference_times"]) == 100  # the default --max_profiler_iterations
    assert all(("execution_time" in layer) is layer_times for layer in profile["execution_detail"])


def test_profile_without_memory_ranges_and_with_an_unspecified_layer(fake_hub: FakeHub, onnx_path: Path) -> None:
    fake_hub.configure(memory_ranges=False, unspecified_layer=True, layer_units={"Relu": "CPU"})
    client = make_client()
    job = client.submit_inference_job(compile_tiny(client, onnx_path).get_target_model(), S21)
    profile = job.download_profile()
    assert all(profile["execution_summary"][key] is None for key in RANGES)
    first, *layers = profile["execution_detail"]
    assert first["compute_unit"] == "UNSPECIFIED" and "execution_time" not in first
    assert {layer["compute_unit"] for layer in layers} == {"NPU", "CPU"}
    assert all("execution_time" in layer for layer in layers)
    summary = client.get_job_summaries()[0]
    assert summary.job_id == job.job_id and summary.inference_memory_peak_range is None


@pytest.mark.parametrize(("function", "status", "error", "match"), [
    ("get_device_list", 401, UserError, "Failed to authenticate"),
    ("create_compile_job", 429, RateLimitedError, "throttled"),  # a single-device compile is not retried
    ("create_compile_job", 503, InternalError, "unavailable right now"),
])
def test_http_errors_map_to_the_client_errors(fake_hub: FakeHub, onnx_path: Path, function: str, status: int,
                                              error: type[Exception], match: str) -> None:
    fake_hub.fail_next(function, status)
    with pytest.raises(error, match=match):
        compile_tiny(make_client(), onnx_path)
    assert not fake_hub.jobs()
    assert compile_tiny(make_client(), onnx_path).wait().success  # the error was for one call only


def test_rate_limited_inference_is_retried(fake_hub: FakeHub, onnx_path: Path) -> None:
    client = make_client()
    target = compile_tiny(client, onnx_path).get_target_model()
    fake_hub.fail_next("create_inference_job", 429)
    job = client.submit_inference_job(target, S21)
    assert fake_hub.slept == [20]  # the client's rate-limit back-off, not spent
    assert fake_hub.calls()["create_inference_job"] == 2 and len(fake_hub.jobs("inference")) == 1
    assert job.wait().success


def test_framework_check_rejects_a_device_without_qnn(fake_hub: FakeHub, onnx_path: Path) -> None:
    client = make_client()
    target = compile_tiny(client, onnx_path).get_target_model()
    with pytest.raises(UserError, match="does not support QNN model input"):
        client.submit_inference_job(target, qai_hub.Device("Apple iPhone 15 Pro"))


def test_failed_compile_reports_the_service_message(fake_hub: FakeHub, onnx_path: Path, dft_onnx_path: Path,
                                                    tmp_path: Path) -> None:
    fake_hub.configure(fail_compile_if_op={"DFT": DFT_FAILURE})
    client = make_client()
    job = client.submit_compile_job(str(dft_onnx_path), S21, options=COMPILE_OPTIONS)
    assert job.wait().failure and job.get_status().message == DFT_FAILURE
    [log] = job.download_job_logs(str(tmp_path))
    assert DFT_FAILURE in Path(log).read_text()
    chained = client.submit_inference_job(job.get_target_model(), S21)  # the seeded target outlives the failure
    assert chained.wait().failure and job.job_id in chained.get_status().message
    assert compile_tiny(client, onnx_path).wait().success  # a graph without DFT compiles


def test_failed_profile_has_no_profile_and_no_outputs(fake_hub: FakeHub, onnx_path: Path) -> None:
    fake_hub.configure(fail_inference="Job timed out after 8h")
    client = make_client()
    job = client.submit_inference_job(compile_tiny(client, onnx_path).get_target_model(), S21, inputs=sample_inputs())
    assert job.wait().message == "Job timed out after 8h"
    assert job.download_profile() == {} and job.download_output_data() is None


def test_job_states_advance_one_per_poll(fake_hub: FakeHub, onnx_path: Path) -> None:
    client = make_client()
    job = client.submit_inference_job(compile_tiny(client, onnx_path).get_target_model(), S21)
    codes = [job.get_status().code for _ in range(5)]
    assert codes == ["CREATED", "PROVISIONING_DEVICE", "MEASURING_PERFORMANCE", "SUCCESS", "SUCCESS"]
    # a job moves only when polled: the compile, never waited for, still shows CREATED
    assert [s.status.code for s in client.get_job_summaries()] == ["SUCCESS", "CREATED"]


def test_job_stuck_in_created_times_out_at_once(fake_hub: FakeHub, onnx_path: Path) -> None:
    fake_hub.configure(inference_states=["CREATED"])
    client = make_client()
    job = client.submit_inference_job(compile_tiny(client, onnx_path).get_target_model(), S21)
    with pytest.raises(TimeoutError, match="after 600 seconds"):
        job.wait(timeout=600)
    assert sum(fake_hub.slept) == 600 and job.get_status().pending
    with pytest.raises(EndlessWait):
        job.download_profile()  # waits without a timeout: a hang with the real service


def test_get_job_reattaches(fake_hub: FakeHub, onnx_path: Path) -> None:
    client = make_client()
    compile_job = compile_tiny(client, onnx_path)
    job = client.submit_inference_job(compile_job.get_target_model(), S21, inputs=sample_inputs())
    again = make_client().get_job(job.job_id)
    assert isinstance(again, qai_hub.InferenceJob) and again.profiling
    assert (again.model.model_id, again.inputs.dataset_id) == (job.model.model_id, job.inputs.dataset_id)
    assert again.wait().success and job.get_status().success
    assert again.download_profile() == job.download_profile()
    assert make_client().get_job(compile_job.job_id).get_target_model().model_id == job.model.model_id
    assert [s.job_id for s in client.get_job_summaries()] == [job.job_id, compile_job.job_id]


def test_instances_on_one_file_share_the_service(fake_hub: FakeHub, onnx_path: Path) -> None:
    other = FakeHub(fake_hub.state_path)
    other.configure(fail_compile="QAIRT converter failed")
    job = compile_tiny(make_client(), onnx_path)
    assert job.wait().message == "QAIRT converter failed"
    assert list(other.jobs("compile")) == [job.job_id] and other.calls() == fake_hub.calls()


SUBMIT_COMPILE = """
import sys
import qai_hub as hub
specs = {"image": ((1, 3, 64, 64), "float32"), "mask": ((1, 1, 64, 64), "float32")}
job = hub.submit_compile_job(sys.argv[1], hub.Device("Samsung Galaxy S21"), input_specs=specs,
                             options="--target_runtime qnn_dlc")
print(job.job_id)
"""


def test_a_subprocess_uses_the_same_service(fake_hub: FakeHub, onnx_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SUBMIT_COMPILE, str(onnx_path)], env=fake_hub.subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job = make_client().get_job(done.stdout.split()[-1])
    assert isinstance(job, qai_hub.CompileJob) and job.wait().success
    assert fake_hub.calls()["create_compile_job"] == 1


def test_an_unserved_rest_call_never_leaves_the_machine(tmp_path: Path) -> None:
    hub = FakeHub(tmp_path / "state.json").install()
    try:
        with pytest.raises(UnexpectedNetworkCall):
            make_client().get_models()
    finally:
        hub.uninstall()
    [url] = hub.network_attempts()
    assert url.startswith(f"{API_URL}/api/v1/models/")
