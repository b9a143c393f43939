"""An offline Qualcomm AI Hub for tests: the real qai-hub 0.56 client talks to a scripted service in this process.

The fake replaces the client's REST functions (``qai_hub.public_rest_api``, which ``qai_hub/client.py`` calls
through the module attribute ``api``) and nothing above them, so device resolution, framework checks,
``input_specs`` → protobuf, the job state machine, ``wait()``, profile → dict conversion and error mapping are the
client's own code (``../shared/reference/backends.md`` §3.7). Each replacement binds its arguments to the real
function's signature, so a client that calls the REST layer differently fails here first. Replies are real
``public_api_pb2`` messages.

The service's state is a JSON file (uploaded files sit beside it), locked with ``fcntl`` around every
read-modify-write, so the test process and ``rbench`` subprocesses (see ``aihub_site/sitecustomize.py``) share one
service. What it does:

- compile: ONNX sources only; succeeds by default with a target model of the ``--target_runtime`` type whose
  bytes are the source ONNX; scripted failures (every compile, or an op type in the graph); a graph input left
  dynamic without ``input_specs`` fails as the service does;
- inference: a job's states advance by one per ``get_job`` (one ``wait()`` poll); with inputs, the outputs are the
  source ONNX run by ONNX Runtime on the CPU, served as an h5 dataset; with ``profile=True`` a ``ProfileDetail`` of
  a chosen version, its layers derived from the ONNX graph;
- errors: the next N calls of a REST function raise the client's ``APIException`` with an HTTP status;
- failed or finished jobs offer a HUB_LOG artifact;
- the client's sleeps return at once (its ``wait(timeout)`` counts them, so it still times out); a wait with no
  timeout on a job that never ends raises :class:`EndlessWait` instead of hanging;
- anything else that would reach the network (an unfaked REST function, a stray ``requests`` call) raises
  :class:`UnexpectedNetworkCall` and is recorded.

The texts of failures the fake decides itself (schema mismatch, dynamic shape, a failed producer) are modelled on
the service's, not recorded from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import os
import secrets
import shlex
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qai_hub
import qai_hub.client as hub_client
import requests
from google.protobuf.timestamp_pb2 import Timestamp
from packaging.version import Version
from qai_hub import api_utils
from qai_hub import public_api_pb2 as api_pb
from qai_hub.public_rest_api import APIException, ClientConfig
from qai_hub.util.dataset_entries_converters import dataset_entries_to_h5, h5_to_dataset_entries

STATE_ENV = "RBENCH_TEST_AIHUB_STATE"
SITE_DIR = Path(__file__).resolve().parent / "aihub_site"
API_URL = "http://invalid.local"  # never resolved: every REST call is served here
FAKE_TOKEN = "fake-aihub-token"
FILE_URL = "fake-aihub://"  # artifact URLs the fake's downloader serves
HUB_VERSION = "fake-aihub"
DATASET_LIFETIME_S = 30 * 24 * 3600
MAX_SLEEP_S = 3 * 3600  # virtual: more means a wait() without timeout on a job that never ends


def _snapdragon_phone(name: str, os_version: str, soc: str, chipset: str, hexagon: str, *extra: str) -> dict[str, Any]:
    """A Samsung phone as the service lists it: the three frameworks AI Hub runs on Android, and ``extra``."""
    return {"name": name, "os": os_version, "soc": soc, "attributes": sorted([
        "abi:arm64-v8a", f"chipset:qualcomm-snapdragon-{chipset}", "format:phone", "framework:onnx",
        "framework:qnn", "framework:tflite", f"hexagon:{hexagon}", "os:android", "vendor:samsung", *extra])}


# Two Snapdragon 888 phones with the same OS, so selecting by chipset must pick one (the service's rule is unknown;
# the fake takes the newest OS, then the first listed). The 888's FP16 support on the NPU is unresolved
# (backends.md §3.2), so it has no htp-supports-fp16 attribute.
DEVICES: tuple[dict[str, Any], ...] = (
    _snapdragon_phone("Samsung Galaxy S21", "11", "Snapdragon® 888", "888", "v68"),
    _snapdragon_phone("Samsung Galaxy S21 Ultra", "11", "Snapdragon® 888", "888", "v68"),
    _snapdragon_phone("Samsung Galaxy S23", "13", "Snapdragon® 8 Gen 2", "8gen2", "v73", "htp-supports-fp16:true"),
    _snapdragon_phone("Samsung Galaxy S24", "14", "Snapdragon® 8 Gen 3", "8gen3", "v75", "htp-supports-fp16:true",
                      "htp-supports-weight-sharing:true"),
    {"name": "Apple iPhone 15 Pro", "os": "17.4", "soc": "Apple A17 Pro", "attributes": [
        "chipset:apple-a17-pro", "format:phone", "framework:coreml", "os:ios", "vendor:apple"]},
)
USER = {"id": 1, "first_name": "Fake", "last_name": "User", "email": "rbench@example.com", "org_id": 1}
FRAMEWORKS = (("QAIRT", "2.41", ()), ("QAIRT", "2.42", ("default", "latest")))

DEFAULT_SCENARIO: dict[str, Any] = {
    "compile_states": ["CREATED", "OPTIMIZING_MODEL", "SUCCESS"],
    "inference_states": ["CREATED", "PROVISIONING_DEVICE", "MEASURING_PERFORMANCE", "SUCCESS"],
    "fail_compile": None,  # message: every new compile job ends FAILED with it
    "fail_compile_if_op": {},  # ONNX op type -> message: a compile of a graph using that op ends FAILED
    "fail_inference": None,  # message: every new inference job ends FAILED with it
    "detail_version": "1.8",  # ProfileDetail "major.minor"; a major other than 1 is the legacy layout
    "inference_time_us": 4200,  # mean of all_inference_times
    "memory_ranges": True,  # False: the stages' memory ranges are unset (None in the profile dict)
    "unspecified_layer": False,  # True: an input conversion layer with compute unit UNSPECIFIED and no time
    "layer_units": {},  # ONNX op type -> "NPU"/"GPU"/"CPU" for its layers (default NPU)
    "qairt_version": "2.42",  # when neither the job's nor its compile's options say --qairt_version
}
LAYER_TIMES_SINCE = (1, 3)  # per-layer execution_time from this ProfileDetail version on (runners/aihub_profile.py)
DEFAULT_PROFILER_ITERATIONS = 100
DEFAULT_TARGET_RUNTIME = "tflite"
TARGET_MODEL_TYPES = {
    "tflite": api_pb.MODEL_TYPE_TFLITE,
    "qnn_dlc": api_pb.MODEL_TYPE_QNN_DLC,
    "qnn_context_binary": api_pb.MODEL_TYPE_QNN_CONTEXT_BINARY,
    "onnx": api_pb.MODEL_TYPE_ONNX,
    "precompiled_qnn_onnx": api_pb.MODEL_TYPE_ONNX,
    "qnn_lib_aarch64_android": api_pb.MODEL_TYPE_QNN_LIB_AARCH64_ANDROID,
}
QNN_MODEL_TYPES = {api_pb.MODEL_TYPE_QNN_DLC, api_pb.MODEL_TYPE_QNN_CONTEXT_BINARY}
FILE_EXTENSIONS = {
    api_pb.MODEL_TYPE_TFLITE: ".tflite", api_pb.MODEL_TYPE_QNN_DLC: ".dlc",
    api_pb.MODEL_TYPE_QNN_CONTEXT_BINARY: ".bin", api_pb.MODEL_TYPE_ONNX: ".onnx",
    api_pb.MODEL_TYPE_QNN_LIB_AARCH64_ANDROID: ".so",
}
LAYER_TYPES = {  # QNN op names for ONNX op types that QNN renames
    "Conv": "Conv2d", "ConvTranspose": "TransposeConv2d", "Add": "ElementWiseAdd", "Sub": "ElementWiseSubtract",
    "Mul": "ElementWiseMultiply", "Div": "ElementWiseDivide",
}
UNLISTED_OPS = {"Constant", "Identity"}  # folded away before the profiler sees layers
LAYER_WEIGHTS = {"Conv": 4, "ConvTranspose": 4}  # share of the inference time, relative to 1 for other layers
HTP_CYCLES_PER_US = 1400
# Magnitudes of a small float model's profile: µs and bytes.
LOAD_TIMES_US = {"cold": 1_350_000, "warm": 270_000}
PEAK_MEMORY = {"compile": 0, "cold_load": 160_000_000, "warm_load": 158_000_000, "execution": 162_000_000}
MEMORY_RANGES = {  # field -> ((increase low, high), (peak low, high))
    "compile_memory": ((0, 0), (0, 0)),
    "cold_load_memory": ((70_000_000, 80_000_000), (96_000_000, 106_000_000)),
    "warm_load_memory": ((0, 0), (120_000, 42_000_000)),
    "execution_memory": ((0, 2_600_000), (2_600_000, 39_000_000)),
}
ROUTES = (  # the REST functions the fake serves (names in qai_hub.public_rest_api)
    "get_auth_user", "get_device_list", "get_framework_list",
    "create_and_upload_model", "get_model", "download_model",
    "create_and_upload_dataset", "get_dataset", "download_dataset", "download_dataset_info",
    "create_compile_job", "create_inference_job", "get_job", "get_job_results", "get_job_summary_list",
    "_get_job_artifacts_download_info",
)
JOB_STATES = {state.name: state.value for state in hub_client.JobStatus.State}
TERMINAL_STATES = {"SUCCESS", "FAILED"}


class UnexpectedNetworkCall(AssertionError):
    """A request that would have left the machine: the client used a REST path the fake does not serve."""


class EndlessWait(AssertionError):
    """The client slept ``MAX_SLEEP_S`` virtual seconds: with instant sleeps, a hang becomes this failure."""


class FakeHub:
    """The service: its state file, scripting helpers for tests, and the patches that route the client to it.

    Several instances (in several processes) may share one ``state_path``; only one per process is installed.
    ``tokens`` (the API tokens the client sent) and ``slept`` (the client's sleeps, in seconds) are this process's
    record and never reach the state file.
    """

    def __init__(self, state_path: str | os.PathLike[str]) -> None:
        self.state_path = Path(state_path).resolve()
        self.files = self.state_path.with_name(self.state_path.stem + "-files")
        self.client_ini = self.files / "client.ini"
        self.tokens: list[str] = []
        self.slept: list[float] = []
        self._patches: list[tuple[object, str, object]] = []
        self.files.mkdir(parents=True, exist_ok=True)
        with self._locked():  # the first instance creates the service; later ones (other processes) join it
            if not self.state_path.exists():
                self._write({"next_id": 1, "service": secrets.token_hex(3), "scenario": dict(DEFAULT_SCENARIO),
                             "calls": {}, "errors": {},
                             "network_attempts": [], "models": {}, "datasets": {}, "jobs": {}})
                write_client_ini(self.client_ini)

    # --- scripting and inspection (for tests) ---

    def configure(self, **changes: Any) -> None:
        """Change scenario keys (see ``DEFAULT_SCENARIO``); jobs created afterwards follow them."""
        unknown = set(changes) - set(DEFAULT_SCENARIO)
        if unknown:
            raise TypeError(f"unknown scenario keys {sorted(unknown)}; known: {sorted(DEFAULT_SCENARIO)}")
        for key in ("compile_states", "inference_states"):
            if key in changes and not (changes[key] and set(changes[key]) <= set(JOB_STATES)):
                raise ValueError(f"{key}: a non-empty list of states among {sorted(JOB_STATES)}")
        if "detail_version" in changes:
            _detail_version(changes["detail_version"])
        with self._transaction() as state:
            state["scenario"].update(changes)

    def fail_next(self, function: str, status: int, times: int = 1, message: str | None = None) -> None:
        """Make the next ``times`` calls of REST ``function`` raise ``APIException(message, status_code=status)``.

        With no message the exception carries the client's default text for the status, except 429, which carries
        the body the service sends when throttling.
        """
        if function not in ROUTES:
            raise ValueError(f"{function!r} is not served by the fake; served: {ROUTES}")
        if message is None and status == 429:
            message = json.dumps({"detail": "Request was throttled. Expected available in 20 seconds."})
        with self._transaction() as state:
            state["errors"].setdefault(function, []).extend([{"status": status, "message": message}] * times)

    def calls(self) -> dict[str, int]:
        """How many times each REST function was called, by all processes (failed calls included)."""
        return dict(self._read()["calls"])

    def jobs(self, kind: str | None = None) -> dict[str, dict[str, Any]]:
        """The job records by id, all or only those of ``kind`` ("compile" or "inference")."""
        return {job_id: job for job_id, job in self._read()["jobs"].items() if kind in (None, job["kind"])}

    def network_attempts(self) -> list[str]:
        """URLs of requests the fake refused (see :class:`UnexpectedNetworkCall`)."""
        return list(self._read()["network_attempts"])

    def subprocess_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment in which a Python subprocess (e.g. the ``rbench`` CLI) uses this service.

        ``aihub_site/sitecustomize.py`` installs the fake from ``RBENCH_TEST_AIHUB_STATE``; ``QAIHUB_CLIENT_INI``
        points ``Client()`` and the module-global client at the fake's ini.
        """
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE_DIR), env.get("PYTHONPATH")]))
        env[STATE_ENV] = str(self.state_path)
        env["QAIHUB_CLIENT_INI"] = str(self.client_ini)
        return env

    # --- patching ---

    def install(self) -> FakeHub:
        """Route the client's REST functions, its sleeps, its artifact downloads and ``requests`` to the fake."""
        if self._patches:
            raise RuntimeError("this FakeHub is already installed")
        for name in ROUTES:
            self._patch(hub_client.api, name, self._route(name))
        self._patch(hub_client, "time", _InstantTime(self.slept))
        self._patch(api_utils, "download_file", self._download_artifact(api_utils.download_file))
        self._patch(requests.Session, "send", self._refuse_network)
        return self

    def uninstall(self) -> None:
        """Undo :meth:`install`."""
        while self._patches:
            owner, name, original = self._patches.pop()
            setattr(owner, name, original)

    def _patch(self, owner: object, name: str, replacement: object) -> None:
        self._patches.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    def _route(self, name: str) -> Callable[..., Any]:
        """The stand-in for REST function ``name``: bound like the real one, counted, maybe failed, then served."""
        signature = inspect.signature(getattr(hub_client.api, name))
        handler = getattr(self, "_on_" + name.lstrip("_"))

        def serve(*args: Any, **kwargs: Any) -> Any:
            arguments = signature.bind(*args, **kwargs)
            arguments.apply_defaults()
            config: ClientConfig = arguments.arguments.pop("config")
            self.tokens.append(config.api_token)
            with self._transaction() as state:
                state["calls"][name] = state["calls"].get(name, 0) + 1
                scripted = state["errors"].get(name)
                error = scripted.pop(0) if scripted else None
            if error:
                raise APIException(error["message"], status_code=error["status"], url=api_utils.api_url(config))
            with self._transaction() as state:
                return handler(state, config, **arguments.arguments)

        return serve

    def _download_artifact(self, original: Callable[..., str]) -> Callable[..., str]:
        """``api_utils.download_file`` serving the fake's artifact URLs (job logs); others go to ``original``."""

        def download_file(url: str, filename: str, dst_path: str, verbose: bool, *args: Any, **kwargs: Any) -> str:
            if not url.startswith(FILE_URL):
                return original(url, filename, dst_path, verbose, *args, **kwargs)
            job_id = url[len(FILE_URL):].split("/")[0]
            _, dst_path = api_utils._verify_download_path(filename, dst_path, should_extract_file=False)
            Path(dst_path).write_text(_hub_log(job_id, self._read()["jobs"][job_id]))
            return dst_path

        return download_file

    def _refuse_network(self, request: requests.PreparedRequest, **_: Any) -> None:
        """Replaces ``requests.Session.send`` (as a bound method, so the session is not passed)."""
        with self._transaction() as state:
            state["network_attempts"].append(request.url)
        raise UnexpectedNetworkCall(f"the fake AI Hub does not serve {request.method} {request.url}")

    # --- state file ---

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.files / "state.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[dict[str, Any]]:
        """The state, written back if the block completes."""
        with self._locked():
            state = json.loads(self.state_path.read_text())
            yield state
            self._write(state)

    def _read(self) -> dict[str, Any]:
        with self._locked():
            return json.loads(self.state_path.read_text())

    def _write(self, state: dict[str, Any]) -> None:
        partial = self.state_path.with_suffix(".partial")
        partial.write_text(json.dumps(state, indent=1))
        os.replace(partial, self.state_path)

    # --- REST handlers: (state, config, the real function's other arguments) -> its reply ---

    def _on_get_auth_user(self, state: dict, config: ClientConfig) -> api_pb.User:
        return api_pb.User(**USER)

    def _on_get_device_list(self, state: dict, config: ClientConfig, name: str, os: str, attributes: list[str] | None,
                            select: bool) -> api_pb.DeviceList:
        found = [d for d in DEVICES if _device_matches(d, name, os, attributes or [])]
        if select and found:
            found = [max(found, key=lambda d: Version(d["os"]))]
        return api_pb.DeviceList(devices=[_device_pb(d) for d in found], total_query_count=len(found))

    def _on_get_framework_list(self, state: dict, config: ClientConfig) -> api_pb.FrameworkList:
        frameworks = [api_pb.Framework(name=name, api_version=version, api_tags=tags, full_version=f"{version}.0")
                      for name, version, tags in FRAMEWORKS]
        return api_pb.FrameworkList(frameworks=frameworks, total_query_count=len(frameworks))

    def _on_create_and_upload_model(self, state: dict, config: ClientConfig, path: str,
                                    model_type: int, name: str | None, is_directory: bool,
                                    **_: Any) -> api_pb.CreateUpdateResponse:
        model_id = _new_id(state, "m")
        file = model_id + (".zip" if is_directory else Path(path).suffix)
        shutil.copyfile(path, self.files / file)
        created = time.time()
        state["models"][model_id] = {"name": name or Path(path).name, "model_type": model_type, "file": file,
                                     "producer_id": "", "created": created}
        return api_pb.CreateUpdateResponse(id=model_id, creation_time=_timestamp(created))

    def _on_get_model(self, state: dict, config: ClientConfig, model_id: str) -> api_pb.Model:
        return _model_pb(model_id, _find(state, "models", model_id, config))

    def _on_download_model(self, state: dict, config: ClientConfig, model_id: str, file_path: str,
                           **_: Any) -> str:
        model = _find(state, "models", model_id, config)
        producer = state["jobs"].get(model["producer_id"])
        if producer is not None and _observed(producer) != "SUCCESS":
            raise _not_found(config, "models", model_id, prefix="Model ")
        filename = model_id + FILE_EXTENSIONS.get(model["model_type"], Path(model["file"]).suffix)
        _, dst_path = api_utils._verify_download_path(filename, file_path, should_extract_file=False)
        shutil.copyfile(self.files / model["file"], dst_path)
        return dst_path

    def _on_create_and_upload_dataset(self, state: dict, config: ClientConfig, path: str, name: str,
                                      permanent: bool, **_: Any) -> api_pb.CreateUpdateResponse:
        dataset_id = _new_id(state, "d")
        shutil.copyfile(path, self.files / f"{dataset_id}.h5")
        state["datasets"][dataset_id] = {"name": name, "permanent": permanent, "created": time.time()}
        return _dataset_reply(dataset_id, state["datasets"][dataset_id])

    def _on_get_dataset(self, state: dict, config: ClientConfig, dataset_id: str) -> api_pb.Dataset:
        return _dataset_pb(dataset_id, _find(state, "datasets", dataset_id, config))

    def _on_download_dataset(self, state: dict, config: ClientConfig, dataset_id: str, file_path: str,
                             **_: Any) -> str:
        _find(state, "datasets", dataset_id, config)
        _, dst_path = api_utils._verify_download_path(f"{dataset_id}.h5", file_path, should_extract_file=False)
        shutil.copyfile(self.files / f"{dataset_id}.h5", dst_path)
        return dst_path

    def _on_download_dataset_info(self, state: dict, config: ClientConfig, dataset_id: str,
                                  **_: Any) -> api_pb.FileDownloadURL:
        _find(state, "datasets", dataset_id, config)
        return api_pb.FileDownloadURL(url=f"{FILE_URL}datasets/{dataset_id}", filename=f"{dataset_id}.h5")

    def _on_create_compile_job(self, state: dict, config: ClientConfig, compile_job_pb: api_pb.CompileJob,
                               project_id: str | None) -> api_pb.CreateUpdateResponse:
        source_id = compile_job_pb.model.model_id
        source = _find(state, "models", source_id, config, prefix="Model ")
        options = parse_options(compile_job_pb.options)
        runtime = options.get("target_runtime", DEFAULT_TARGET_RUNTIME)
        if runtime not in TARGET_MODEL_TYPES:
            raise APIException(json.dumps({"detail": f"Invalid --target_runtime '{runtime}'. Valid values: "
                                                     f"{', '.join(TARGET_MODEL_TYPES)}."}),
                               status_code=400, url=api_utils.api_url(config, "jobs"))
        graph = self._onnx_graph(source, source_id)
        requested = [[name, list(shape), dtype] for name, (shape, dtype)
                     in api_utils.tensor_type_list_pb_to_list_shapes(compile_job_pb.tensor_type_list)]
        inputs = requested or _graph_tensors(graph.input)
        failure = _compile_failure(state["scenario"], graph, inputs)
        job_id, target_id = _new_id(state, "j"), _new_id(state, "m")
        devices = [_device_dict(d) for d in compile_job_pb.devices.devices]
        qairt = _qairt(options.get("qairt_version"), state["scenario"])
        created = time.time()
        state["models"][target_id] = {
            "name": source["name"], "model_type": TARGET_MODEL_TYPES[runtime], "file": source["file"],
            "producer_id": job_id, "created": created, "inputs": inputs, "outputs": _graph_tensors(graph.output),
            "metadata": _target_metadata(TARGET_MODEL_TYPES[runtime], qairt, devices[0])}
        state["jobs"][job_id] = {
            "kind": "compile", "name": compile_job_pb.name, "model_id": source_id, "target_model_id": target_id,
            "device": devices[0], "devices": devices, "options": compile_job_pb.options, "requested": requested,
            "states": _script(state["scenario"]["compile_states"], failure), "failure": failure, "polls": 0,
            "created": created}
        return api_pb.CreateUpdateResponse(id=job_id, creation_time=_timestamp(created))

    def _on_create_inference_job(self, state: dict, config: ClientConfig, inference_job_pb: api_pb.InferenceJob,
                                 project_id: str | None) -> api_pb.CreateUpdateResponse:
        model_id = inference_job_pb.model.model_id
        model = _find(state, "models", model_id, config, prefix="Model ")
        source_id = state["jobs"][model["producer_id"]]["model_id"] if model["producer_id"] else model_id
        source = state["models"][source_id]  # the ONNX that stands for the model on the "device"
        graph = self._onnx_graph(source, source_id)
        inputs = model.get("inputs") or _graph_tensors(graph.input)
        dataset_id = inference_job_pb.dataset.dataset_id
        if dataset_id:
            _find(state, "datasets", dataset_id, config)
        samples = self._samples(dataset_id) if dataset_id else {}
        failure = (state["scenario"]["fail_inference"] or _producer_failure(state, model)
                   or _schema_failure(samples, inputs))
        job_id = _new_id(state, "j")
        output_id = self._store_outputs(state, job_id, source, samples) if samples and not failure else None
        options = parse_options(inference_job_pb.options)
        batches = len(next(iter(samples.values()))) if samples else 1
        created = time.time()
        state["jobs"][job_id] = {
            "kind": "inference", "name": inference_job_pb.name, "model_id": model_id, "dataset_id": dataset_id,
            "output_dataset_id": output_id, "device": _device_dict(inference_job_pb.device),
            "options": inference_job_pb.options, "profiling": inference_job_pb.is_profiling_on, "inputs": inputs,
            "states": _script(state["scenario"]["inference_states"], failure), "failure": failure, "polls": 0,
            "created": created,
            "profile": _profile_plan(state, model, options, graph, batches)}
        return api_pb.CreateUpdateResponse(id=job_id, creation_time=_timestamp(created))

    def _on_get_job(self, state: dict, config: ClientConfig, job_id: str) -> api_pb.Job:
        job = _find(state, "jobs", job_id, config)
        job["polls"] += 1
        return _job_pb(state, job_id, job)

    def _on_get_job_results(self, state: dict, config: ClientConfig, job_id: str) -> api_pb.JobResult:
        job = _find(state, "jobs", job_id, config)
        if _observed(job) not in TERMINAL_STATES:
            raise _not_found(config, f"jobs/{job_id}/result", job_id)
        if job["kind"] == "compile":
            return api_pb.JobResult(compile_job_result=api_pb.CompileJobResult(compile_job_id=job_id))
        result = api_pb.InferenceJobResult(inference_job_id=job_id)
        if _observed(job) == "SUCCESS":
            result.output_dataset_id = job["output_dataset_id"] or ""
            if job["profiling"]:
                result.detail.CopyFrom(_profile_detail(job_id, job["profile"]))
        return api_pb.JobResult(inference_job_result=result)

    def _on_get_job_summary_list(self, state: dict, config: ClientConfig, offset: int, limit: int | None,
                                 states: list[int] | None, job_type: int, **_: Any) -> api_pb.JobSummaryList:
        wanted = [(job_id, job) for job_id, job in state["jobs"].items()
                  if (not states or JOB_STATES[_observed(job)] in states)
                  and job_type in (api_pb.JOB_TYPE_UNSPECIFIED, _job_type(job))]
        wanted.sort(key=lambda item: item[1]["created"], reverse=True)
        page = wanted[offset:None if limit is None else offset + limit]
        return api_pb.JobSummaryList(job_summaries=[_summary_pb(state, job_id, job) for job_id, job in page],
                                     total_query_count=len(wanted))

    def _on_get_job_artifacts_download_info(self, state: dict, config: ClientConfig, job_id: str,
                                            artifact_type: int, **_: Any) -> api_pb.NamedArtifactDownloadURLList:
        job = _find(state, "jobs", job_id, config)
        if artifact_type not in _artifacts(job):
            return api_pb.NamedArtifactDownloadURLList()
        return api_pb.NamedArtifactDownloadURLList(artifacts=[api_pb.NamedArtifactDownloadURL(
            url=f"{FILE_URL}{job_id}/hub.log", filename=f"{job_id}_hub.log", name="hub.log")])

    # --- service logic that reads uploaded files ---

    def _onnx_graph(self, model: Mapping[str, Any], model_id: str) -> onnx.GraphProto:
        if model["model_type"] != api_pb.MODEL_TYPE_ONNX or not model["file"].endswith(".onnx"):
            raise NotImplementedError(f"the fake AI Hub runs ONNX files only; model {model_id} is not one")
        return onnx.load(str(self.files / model["file"]), load_external_data=False).graph

    def _samples(self, dataset_id: str) -> dict[str, list[np.ndarray]]:
        with h5py.File(self.files / f"{dataset_id}.h5", "r") as h5f:
            return dict(h5_to_dataset_entries(h5f))

    def _store_outputs(self, state: dict, job_id: str, source: Mapping[str, Any],
                       samples: Mapping[str, list[np.ndarray]]) -> str:
        """Run the source ONNX on each sample and store the outputs as the job's output dataset.

        The samples' names are the target's (``input_specs`` may rename inputs), so they feed the ONNX by position.
        """
        session = ort.InferenceSession(str(self.files / source["file"]), providers=["CPUExecutionProvider"])
        onnx_inputs = [i.name for i in session.get_inputs()]
        outputs: dict[str, list[np.ndarray]] = {o.name: [] for o in session.get_outputs()}
        for sample in zip(*samples.values()):
            for values, value in zip(outputs.values(), session.run(None, dict(zip(onnx_inputs, sample)))):
                values.append(value)
        dataset_id = _new_id(state, "d")
        with h5py.File(self.files / f"{dataset_id}.h5", "w") as h5f:
            dataset_entries_to_h5(outputs, h5f)
        state["datasets"][dataset_id] = {"name": f"{job_id}_output", "permanent": False, "created": time.time()}
        return dataset_id


class _InstantTime:
    """Stands in for the ``time`` module inside ``qai_hub.client``: ``sleep`` returns at once and is recorded.

    ``Job.wait(timeout)`` measures its timeout by adding up the seconds it slept, so waits still time out, at once.
    A wait with no timeout (``download_profile()`` waits so) on a job that never ends raises :class:`EndlessWait`.
    """

    def __init__(self, slept: list[float]) -> None:
        self._slept = slept

    def sleep(self, seconds: float) -> None:
        self._slept.append(seconds)
        if sum(self._slept) > MAX_SLEEP_S:
            raise EndlessWait(f"the AI Hub client slept over {MAX_SLEEP_S} s (virtual) waiting for a job")

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


# --- public helpers ---

def client_config(token: str = FAKE_TOKEN) -> ClientConfig:
    """A client configuration for the fake: no ``~/.qai_hub`` read, no progress output."""
    return ClientConfig(api_token=token, api_url=API_URL, web_url=API_URL, verbose=False)


def make_client(token: str = FAKE_TOKEN) -> qai_hub.Client:
    """A real ``qai_hub.Client`` for the fake (which must be installed before it is used)."""
    return qai_hub.Client(config=client_config(token))


def write_client_ini(path: Path, token: str = FAKE_TOKEN) -> Path:
    """The ini file ``QAIHUB_CLIENT_INI`` may name, for ``Client()`` and the module-global client."""
    path.write_text(f"[api]\napi_token = {token}\napi_url = {API_URL}\nweb_url = {API_URL}\nverbose = False\n")
    return path


def parse_options(options: str) -> dict[str, str]:
    """A job's options string as ``{name: value}`` (``--name value``, ``--name=value``; a bare flag maps to "")."""
    tokens = shlex.split(options)
    parsed: dict[str, str] = {}
    for i, token in enumerate(tokens):
        if token.startswith("--"):
            name, has_value, value = token[2:].partition("=")
            if not has_value and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value = tokens[i + 1]
            parsed[name] = value
    return parsed


_installed: FakeHub | None = None


def install(state_path: str | os.PathLike[str], **scenario: Any) -> FakeHub:
    """Install a :class:`FakeHub` on ``state_path`` in this process (scenario keys as in ``configure``)."""
    global _installed
    if _installed is not None:
        raise RuntimeError(f"a fake AI Hub is already installed ({_installed.state_path})")
    hub = FakeHub(state_path)
    if scenario:
        hub.configure(**scenario)
    _installed = hub.install()
    return hub


def uninstall() -> None:
    """Remove the fake :func:`install` installed, if any."""
    global _installed
    if _installed is not None:
        _installed.uninstall()
        _installed = None


@pytest.fixture(name="fake_hub")
def fake_hub_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """``fake_hub``: a fresh service, installed; ``Client()`` and ``qai_hub.submit_*`` read its ini instead of
    ``~/.qai_hub``. Fails the test if anything tried the network. Use it with
    ``from fake_aihub import fake_hub_fixture  # noqa: F401``.
    """
    hub = install(tmp_path / "aihub" / "state.json")
    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(hub.client_ini))
    monkeypatch.setattr(qai_hub.hub._global_client, "_config", None)  # read again, from the fake's ini
    try:
        yield hub
    finally:
        uninstall()
    assert not hub.network_attempts(), f"requests left for the network: {hub.network_attempts()}"


# --- service rules (pure: state dicts in, decisions or protobuf out) ---

def _new_id(state: dict, prefix: str) -> str:
    """A new id, unique across fake services too (as the real service's are): a build cached by one test's service
    must not name another's job."""
    number = state["next_id"]
    state["next_id"] += 1
    return f"{prefix}{state['service']}{number:04d}"


def _find(state: dict, table: str, key: str, config: ClientConfig, prefix: str = "") -> dict[str, Any]:
    if key not in state[table]:
        raise _not_found(config, table, key, prefix)
    return state[table][key]


def _not_found(config: ClientConfig, path: str, key: str, prefix: str = "") -> APIException:
    """The client's own 404 (it prefixes "Model " for models only)."""
    return APIException(f"{prefix}ID '{key}' could not be found. It may not exist or you may not have permission "
                        "to view it.", status_code=404, url=api_utils.api_url(config, path))


def _timestamp(seconds: float) -> Timestamp:
    return Timestamp(seconds=int(seconds))


def _device_matches(device: Mapping[str, Any], name: str, os_version: str, attributes: Sequence[str]) -> bool:
    return ((not name or device["name"] == name) and _os_matches(device["os"], os_version)
            and set(attributes) <= set(device["attributes"]))


def _os_matches(version: str, wanted: str) -> bool:
    """``wanted`` is "" (any), a version (exact) or a right-open interval "[low,high)" with optional bounds."""
    if not wanted:
        return True
    if not wanted.startswith("["):
        return Version(version) == Version(wanted)
    low, high = wanted[1:-1].split(",")
    return (not low or Version(version) >= Version(low)) and (not high or Version(version) < Version(high))


def _device_pb(device: Mapping[str, Any]) -> api_pb.Device:
    return api_pb.Device(name=device["name"], os=device["os"], attributes=device["attributes"],
                         soc_description=device.get("soc", ""))


def _device_dict(device: api_pb.Device) -> dict[str, Any]:
    return {"name": device.name, "os": device.os, "attributes": list(device.attributes)}


def _graph_tensors(values: Sequence[onnx.ValueInfoProto]) -> list[list]:
    """``[name, shape, dtype]`` per graph input or output; a dynamic dimension reads -1."""
    return [[v.name, [d.dim_value if d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim],
             onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name] for v in values]


def _tensor_list_pb(tensors: Sequence[Sequence]) -> api_pb.NamedTensorTypeList:
    return api_utils.input_shapes_to_tensor_type_list_pb({name: (tuple(shape), dtype)
                                                          for name, shape, dtype in tensors})


def _op_types(graph: onnx.GraphProto) -> set[str]:
    """Op types of the graph's nodes, subgraphs (If, Loop, Scan) included."""
    found = set()
    for node in graph.node:
        found.add(node.op_type)
        for attribute in node.attribute:
            single = [attribute.g] if attribute.HasField("g") else []
            for subgraph in [*single, *attribute.graphs]:
                found |= _op_types(subgraph)
    return found


def _compile_failure(scenario: Mapping[str, Any], graph: onnx.GraphProto, inputs: Sequence[Sequence]) -> str | None:
    """Why a compile of ``graph`` with ``inputs`` fails under ``scenario``, or None."""
    if scenario["fail_compile"]:
        return scenario["fail_compile"]
    used = _op_types(graph)
    for op, message in scenario["fail_compile_if_op"].items():
        if op in used:
            return message
    for name, shape, _ in inputs:
        if any(dim < 1 for dim in shape):
            return (f"Input '{name}' has dynamic shape {shape}, which is not supported. Please specify a static "
                    "shape with input_specs.")
    return None


def _script(states: Sequence[str], failure: str | None) -> list[str]:
    """The states a job will show, one per poll (the last repeats); a failure replaces a final SUCCESS."""
    if failure is not None and states[-1] == "SUCCESS":
        return [*states[:-1], "FAILED"]
    return list(states)


def _observed(job: Mapping[str, Any]) -> str:
    """The state the last ``get_job`` showed (the first state before any)."""
    return job["states"][min(max(job["polls"] - 1, 0), len(job["states"]) - 1)]


def _producer_failure(state: dict, model: Mapping[str, Any]) -> str | None:
    producer = state["jobs"].get(model["producer_id"])
    if producer is not None and producer["states"][-1] == "FAILED":
        return f"The model for this job was not produced: compile job {model['producer_id']} failed."
    return None


def _schema_failure(samples: Mapping[str, list[np.ndarray]], inputs: Sequence[Sequence]) -> str | None:
    """Why ``samples`` (none: random inputs) do not fit a model with ``inputs`` (-1: any length), or None."""
    if not samples:
        return None
    if list(samples) != [name for name, _, _ in inputs]:
        return f"Dataset entries {list(samples)} do not match the model's inputs {[n for n, _, _ in inputs]}."
    for name, shape, dtype in inputs:
        for array in samples[name]:
            fits = len(array.shape) == len(shape) and all(want in (-1, got) for got, want in zip(array.shape, shape))
            if not fits or array.dtype.name != dtype:
                return (f"Dataset entry '{name}' is {array.dtype.name}{list(array.shape)}; the model expects "
                        f"{dtype}{list(shape)}.")
    return None


def _detail_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def _qairt(requested: str | None, scenario: Mapping[str, Any]) -> str:
    """A ``--qairt_version`` value as the fake resolves it: unset, "default" and "latest" are the scenario's."""
    return scenario["qairt_version"] if requested in (None, "", "default", "latest") else requested


def _target_metadata(model_type: int, qairt: str, device: Mapping[str, Any]) -> dict[str, str]:
    """Model metadata of a compiled target: the QAIRT version for QNN assets, the Hexagon version for binaries."""
    if model_type not in QNN_MODEL_TYPES:
        return {}
    metadata = {str(api_pb.MODEL_METADATA_KEY_QAIRT_SDK_VERSION): qairt}
    hexagon = [a.split(":", 1)[1] for a in device["attributes"] if a.startswith("hexagon:")]
    if model_type == api_pb.MODEL_TYPE_QNN_CONTEXT_BINARY and hexagon:
        metadata[str(api_pb.MODEL_METADATA_KEY_QNN_CONTEXT_BIN_HEXAGON_VERSION)] = hexagon[0]
    return metadata


def _profile_plan(state: dict, model: Mapping[str, Any], options: Mapping[str, str], graph: onnx.GraphProto,
                  batches: int) -> dict[str, Any]:
    """What the job's profile will hold, fixed at submission: layers from the graph, the QAIRT version from the
    job's ``--qairt_version``, else its compile's, and ``--max_profiler_iterations`` ÷ the input batches runs."""
    scenario = state["scenario"]
    units = scenario["layer_units"]
    layers = [[node.name.replace("/", "_") or f"{node.op_type}_{i}", LAYER_TYPES.get(node.op_type, node.op_type),
               units.get(node.op_type, "NPU"), LAYER_WEIGHTS.get(node.op_type, 1)]
              for i, node in enumerate(graph.node) if node.op_type not in UNLISTED_OPS]
    if scenario["unspecified_layer"]:
        layers.insert(0, [f"{graph.input[0].name}_convert", "Convert", "UNSPECIFIED", 0])
    iterations = int(options.get("max_profiler_iterations", DEFAULT_PROFILER_ITERATIONS))
    producer = state["jobs"].get(model["producer_id"])
    qairt = options.get("qairt_version") or parse_options(producer["options"] if producer else "").get("qairt_version")
    return {"version": list(_detail_version(scenario["detail_version"])), "mean_us": scenario["inference_time_us"],
            "iterations": max(1, iterations // batches), "memory_ranges": scenario["memory_ranges"],
            "qairt_version": _qairt(qairt, scenario), "layers": layers}


def _inference_times(job_id: str, plan: Mapping[str, Any]) -> list[int]:
    """``iterations`` times (µs) within a few percent of the mean, the same for a job in every process."""
    rng = np.random.default_rng(zlib.crc32(job_id.encode()))
    jitter = np.clip(rng.normal(0.0, 0.02, plan["iterations"]), -0.05, 0.08)
    return [int(plan["mean_us"] * (1 + j)) for j in jitter]


def _profile_detail(job_id: str, plan: Mapping[str, Any]) -> api_pb.ProfileDetail:
    """The ``ProfileDetail`` the service returns for a profiled job, laid out as ``plan["version"]`` has it."""
    major, minor = plan["version"]
    times = _inference_times(job_id, plan)
    detail = api_pb.ProfileDetail(major_version=major, minor_version=minor, execution_time=min(times),
                                  layer_details=_layer_details(plan, min(times), (major, minor) >= LAYER_TIMES_SINCE))
    if major != 1:
        detail.load_time = LOAD_TIMES_US["cold"]
        detail.peak_memory_usage = PEAK_MEMORY["execution"]
        return detail
    detail.cold_load_time = LOAD_TIMES_US["cold"]
    detail.warm_load_time = LOAD_TIMES_US["warm"]
    detail.compile_time = 0  # an ahead-of-time compiled asset
    for stage, peak in PEAK_MEMORY.items():
        setattr(detail, f"after_{stage}_peak_memory", peak)
    detail.tool_versions.append(api_pb.ToolVersion(name="QAIRT", version=plan["qairt_version"]))
    if minor >= 1 and plan["memory_ranges"]:
        for field, ((increase_low, increase_high), (peak_low, peak_high)) in MEMORY_RANGES.items():
            getattr(detail, field).CopyFrom(api_pb.ProfileDetail.MemoryUsage(
                increase=api_pb.Range(lower=increase_low, upper=increase_high),
                peak=api_pb.Range(lower=peak_low, upper=peak_high)))
    if minor >= 2:
        detail.all_cold_load_times.append(LOAD_TIMES_US["cold"])
        detail.all_warm_load_times.append(LOAD_TIMES_US["warm"])
        detail.all_execution_times.extend(times)
    return detail


def _layer_details(plan: Mapping[str, Any], total_us: int, timed: bool) -> list[api_pb.LayerDetail]:
    """One entry per layer; with ``timed``, 90% of ``total_us`` split by weight (UNSPECIFIED layers get no time)."""
    weights = sum(weight for *_, weight in plan["layers"])
    details = []
    for i, (name, layer_type, unit, weight) in enumerate(plan["layers"]):
        layer = api_pb.LayerDetail(name=name, layer_type_name=layer_type, id=f":0:{i}",
                                   compute_unit=api_pb.ComputeUnit.Value(f"COMPUTE_UNIT_{unit}"))
        if timed and unit != "UNSPECIFIED":
            layer.execution_time = max(1, int(0.9 * total_us * weight / weights))
            if unit == "NPU":
                layer.execution_cycles = layer.execution_time * HTP_CYCLES_PER_US
        details.append(layer)
    return details


def _model_pb(model_id: str, model: Mapping[str, Any]) -> api_pb.Model:
    model_pb = api_pb.Model(model_id=model_id, name=model["name"], model_type=model["model_type"],
                            creation_time=_timestamp(model["created"]), producer_id=model["producer_id"],
                            is_directory=model["file"].endswith(".zip"), file_upload_complete=True)
    if "inputs" in model:
        model_pb.input_spec.CopyFrom(_tensor_list_pb(model["inputs"]))
        model_pb.output_spec.CopyFrom(_tensor_list_pb(model["outputs"]))
        for key, value in model["metadata"].items():
            model_pb.metadata.entries[int(key)] = value
    return model_pb


def _dataset_pb(dataset_id: str, dataset: Mapping[str, Any]) -> api_pb.Dataset:
    dataset_pb = api_pb.Dataset(dataset_id=dataset_id, name=dataset["name"], permanent=dataset["permanent"],
                                creation_time=_timestamp(dataset["created"]), file_upload_complete=True)
    if not dataset["permanent"]:
        dataset_pb.expiration_time.CopyFrom(_timestamp(dataset["created"] + DATASET_LIFETIME_S))
    return dataset_pb


def _dataset_reply(dataset_id: str, dataset: Mapping[str, Any]) -> api_pb.CreateUpdateResponse:
    reply = api_pb.CreateUpdateResponse(id=dataset_id, creation_time=_timestamp(dataset["created"]))
    if not dataset["permanent"]:
        reply.expiration_time.CopyFrom(_timestamp(dataset["created"] + DATASET_LIFETIME_S))
    return reply


def _artifacts(job: Mapping[str, Any]) -> list[int]:
    return [api_pb.JOB_ARTIFACT_TYPE_HUB_LOG] if _observed(job) in TERMINAL_STATES else []


def _hub_log(job_id: str, job: Mapping[str, Any]) -> str:
    shown = job["states"][:max(job["polls"], 1)]
    lines = [f"[fake-aihub] {job['kind']} job {job_id}: {state}" for state in dict.fromkeys(shown)]
    if job["failure"] and _observed(job) == "FAILED":
        lines.append(f"[fake-aihub] failure: {job['failure']}")
    return "\n".join(lines) + "\n"


def _job_type(job: Mapping[str, Any]) -> int:
    return api_pb.JOB_TYPE_COMPILE if job["kind"] == "compile" else api_pb.JOB_TYPE_INFERENCE


def _job_pb(state: dict, job_id: str, job: Mapping[str, Any]) -> api_pb.Job:
    """The job as ``GET jobs/<id>`` returns it in its observed state."""
    observed = _observed(job)
    common = {"name": job["name"], "job_state": JOB_STATES[observed], "options": job["options"],
              "device": _device_pb(job["device"]), "creation_time": _timestamp(job["created"]),
              "failure_reason": job["failure"] if observed == "FAILED" else ""}
    wrapper = {"hub_version": HUB_VERSION, "available_artifacts": _artifacts(job)}
    if job["kind"] == "compile":
        target = state["models"][job["target_model_id"]]
        compile_pb = api_pb.CompileJob(
            compile_job_id=job_id, model=_model_pb(job["model_id"], state["models"][job["model_id"]]),
            target_model=_model_pb(job["target_model_id"], target),
            devices=api_pb.DeviceList(devices=[_device_pb(d) for d in job["devices"]]),
            tensor_type_list=_tensor_list_pb(job["requested"]), **common)
        if observed == "SUCCESS":
            compile_pb.target_tensor_type_list.CopyFrom(_tensor_list_pb(target["inputs"]))
        return api_pb.Job(compile_job=compile_pb, **wrapper)
    inference_pb = api_pb.InferenceJob(
        inference_job_id=job_id, model=_model_pb(job["model_id"], state["models"][job["model_id"]]),
        is_profiling_on=job["profiling"], **common)
    if job["dataset_id"]:
        inference_pb.dataset.CopyFrom(_dataset_pb(job["dataset_id"], state["datasets"][job["dataset_id"]]))
    if observed == "SUCCESS":
        inference_pb.tensor_type_list.CopyFrom(_tensor_list_pb(job["inputs"]))
        _add_measurements(inference_pb, job_id, job["profile"])
    return api_pb.Job(inference_job=inference_pb, **wrapper)


def _add_measurements(message: api_pb.InferenceJob | api_pb.InferenceJobSummary, job_id: str,
                      plan: Mapping[str, Any]) -> None:
    """The estimated time and inference peak range a finished inference job (or its summary) carries."""
    message.execution_time = min(_inference_times(job_id, plan))
    if plan["memory_ranges"]:
        low, high = MEMORY_RANGES["execution_memory"][1]
        message.execution_peak_memory.CopyFrom(api_pb.Range(lower=low, upper=high))


def _summary_pb(state: dict, job_id: str, job: Mapping[str, Any]) -> api_pb.JobSummary:
    observed = _observed(job)
    common = {"job_id": job_id, "name": job["name"], "job_state": JOB_STATES[observed], "user": api_pb.User(**USER),
              "device_name": job["device"]["name"], "device_os_version": job["device"]["os"],
              "creation_time": _timestamp(job["created"])}
    if job["kind"] == "compile":
        target_type = state["models"][job["target_model_id"]]["model_type"]
        return api_pb.JobSummary(compile_job_summary=api_pb.CompileJobSummary(target_model_type=target_type,
                                                                              **common))
    summary = api_pb.InferenceJobSummary(is_profiling_on=job["profiling"], **common)
    if observed == "SUCCESS":
        _add_measurements(summary, job_id, job["profile"])
    return api_pb.JobSummary(inference_job_summary=summary)
