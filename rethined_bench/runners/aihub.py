"""Qualcomm AI Hub (``aihub``): hosted Snapdragon phones, driven through the real ``qai_hub`` client (extra ``qnn``).

- **prepare** uploads the artifact's ONNX and submits a compile job with the manifest's options (``--target_runtime``,
  ``--compute_unit``, the pinned ``--qairt_version``) and input specs for the resolved device. It does not wait: the
  job id is the build, cached by (artifact sha256, precision, device, QAIRT version), so a re-run reuses the compiled
  target model and pays nothing. A compile the service refuses for an op is the cell's ``unsupported`` reason.
- **submit** makes the protocol's processes N inference jobs with ``profile=True`` on that target model (each a fresh
  session on a phone), ``--max_profiler_iterations`` = the protocol's minimum iterations and
  ``--max_profiler_time`` its time cap; the cell's inputs are uploaded once as a dataset, so every job also returns
  outputs (the first job's are compared with PyTorch for parity).
- **collect** computes rbench's statistics from each job's ``all_inference_times`` (µs → ms), keeps the service's
  ``estimated_inference_time`` beside them, first and warm load, peak-memory ranges, and the op placement (layers
  and time per compute unit); the job ids, device, profile detail version and tool versions (QAIRT) are the receipt.

Hosted numbers are short bursts on shared phones: they are labelled as such in every result. The API token comes
from the environment variable the profile names, else from qai-hub's own configuration (``qai-hub configure``); it
is handed to the client and never stored, logged or printed. A rejected token is one line saying how to configure
it; 429 and 5xx answers are retried with backoff; any other service error is the cell's reason.
"""

from __future__ import annotations

import configparser
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..errors import RbenchError
from ..measure.protocol import Protocol
from ..measure.record import Measurement, ProcessRecord
from ..settings import setting
from ..toolchains import import_optional
from .aihub_profile import HubProfile, describe_placement, parse_profile
from .base import Availability, Build, Prepared
from .jobs import Collected, JobFailed, JobRunner, Submission

CLIENT_INI_ENV = "QAIHUB_CLIENT_INI"  # the one variable qai-hub itself reads: a path to its ini file
DEFAULT_CLIENT_INI = Path("~/.qai_hub/client.ini")
CONFIGURE = "qai-hub configure --api_token <token> (the token is on your AI Hub account page)"
HOSTED = ("AI Hub runs short bursts on shared, hosted phones: apps on users' own phones can see different "
          "numbers (thermal state, background load, sustained runs)")
STATES = {"CREATED": "queued", "OPTIMIZING_MODEL": "compiling", "QUANTIZING_MODEL": "compiling",
          "LINKING_MODELS": "compiling", "PROVISIONING_DEVICE": "profiling", "MEASURING_PERFORMANCE": "profiling",
          "RUNNING_INFERENCE": "profiling", "SUCCESS": "done", "FAILED": "failed"}
# a compile the service refuses because of the model, not the service: the cell is unsupported on this device
_REFUSED_MODEL = re.compile(r"(?i)\b(?:unsupported|not supported|no (?:valid )?implementation|cannot be (?:converted"
                            r"|lowered))\b")
RETRIES = 5


@dataclass(frozen=True)
class AihubSettings:
    device_name: str = setting("", help="an AI Hub device name, exactly as `qai-hub list-devices` shows it")
    chipset: str = setting("qualcomm-snapdragon-888", help="the chipset attribute that selects a device when "
                                                           "device_name is empty or not listed")
    api_token_env: str = setting("QAI_HUB_API_TOKEN", help="environment variable holding the API token (else "
                                                           "qai-hub's own configuration)")
    qairt: str = setting("2.42", help="the QAIRT version jobs pin (the compile cache key)")
    poll_interval_s: float = setting(15.0, help="seconds between polls of pending jobs (also the retry backoff "
                                                "base)")
    deadline_s: int = setting(6 * 3600, help="a cell whose jobs have not finished this long after submission "
                                             "fails (hosted queues can take hours)")

    def __post_init__(self) -> None:
        if not self.device_name and not self.chipset:
            raise RbenchError("an AI Hub device needs device_name or chipset")


def job_state(code: str) -> str:
    """A job status code (``JobStatus.code``) as one of :data:`.jobs.JOB_STATES`; unknown codes are running."""
    return STATES.get(code, "running")


def compile_failure_status(message: str) -> str:
    """``unsupported`` when the service refused the model itself (an op it cannot compile), else ``failed``."""
    return "unsupported" if _REFUSED_MODEL.search(message) else "failed"


class AihubRunner(JobRunner):
    """A hosted Snapdragon device on Qualcomm AI Hub."""

    name = "aihub"
    target = "qnn"
    settings_class = AihubSettings
    times_build = False  # build() submits a compile job; the job's own timing is the service's

    # ------------------------------------------------------------------------------------------ client and device

    @cached_property
    def hub(self) -> Any:
        return import_optional("qai_hub", "qai-hub", "qnn")

    def token_source(self) -> str | None:
        """Where the token comes from (never the token): the environment variable, qai-hub's ini, or None."""
        if os.environ.get(self.settings.api_token_env):
            return f"${self.settings.api_token_env}"
        ini = Path(os.environ.get(CLIENT_INI_ENV) or DEFAULT_CLIENT_INI).expanduser()
        config = configparser.ConfigParser()
        try:
            config.read(ini)
        except configparser.Error:
            return None
        return str(ini) if config.get("api", "api_token", fallback="") else None

    @cached_property
    def client(self) -> Any:
        token = os.environ.get(self.settings.api_token_env)
        if token:
            return self.hub.Client(config=self.hub.ClientConfig(api_token=token, verbose=False))
        client = self.hub.Client()
        client.set_verbose(False)
        return client

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A client call with the service's errors as one line each: 429 and 5xx retried with backoff."""
        hub = self.hub
        for attempt in range(RETRIES + 1):
            try:
                return function(*args, **kwargs)
            except (hub.client.RateLimitedError, hub.InternalError) as exc:
                if attempt == RETRIES:
                    raise RbenchError(f"AI Hub kept refusing after {RETRIES} retries: {_first_line(exc)}") from exc
                time.sleep(self.settings.poll_interval_s * 2**attempt)
            except hub.UserError as exc:
                if "authenticate" in str(exc):
                    raise RbenchError(f"AI Hub rejected the API token from {self.token_source()}; {CONFIGURE}, or "
                                      f"set {self.settings.api_token_env}") from exc
                raise RbenchError(f"AI Hub: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    @cached_property
    def hub_device(self) -> Any:
        """The hosted device: by name, else the first with the chipset attribute; it must run QNN models."""
        name, chipset = self.settings.device_name, self.settings.chipset
        found = self.call(self.client.get_devices, name=name) if name else []
        if not found and chipset:
            found = self.call(self.client.get_devices, attributes=f"chipset:{chipset}")
        found = [device for device in found if "framework:qnn" in device.attributes]
        if not found:
            wanted = " or ".join(filter(None, (repr(name) if name else "", f"chipset:{chipset}" if chipset else "")))
            raise RbenchError(f"AI Hub has no device {wanted} that runs QNN models")
        return self.hub.Device(name=found[0].name, os=found[0].os)

    def availability(self) -> Availability:
        try:
            self.hub
        except RbenchError as exc:
            return Availability(False, "the qai-hub client is not installed", str(exc))
        source = self.token_source()
        if source is None:
            return Availability(False, "no AI Hub API token configured",
                                f"{CONFIGURE}, or export {self.settings.api_token_env}")
        try:
            device = self.hub_device
        except RbenchError as exc:
            return Availability(False, str(exc), f"check the token from {source} and [connection] device_name or "
                                                 "chipset")
        return Availability(True, fix=f"token from {source}; {device.name} (Android {device.os}); {HOSTED}")

    def toolchain(self) -> str:
        return f"qairt {self.settings.qairt}"

    # ------------------------------------------------------------------------------------------ compile

    def build(self, artifact: Artifact) -> Build:
        """Upload the ONNX and submit its compile job for the device (without waiting for it)."""
        qnn = artifact.manifest["qnn"]
        model = self.call(self.client.upload_model, str(artifact.path), name=artifact.path.stem)
        specs = {name: (tuple(shape), dtype) for name, (shape, dtype) in qnn["input_specs"].items()}
        job = self.call(self.client.submit_compile_job, model, device=self.hub_device, name=artifact.path.stem,
                        input_specs=specs, options=qnn["compile_options"])
        return Build(job.job_id, {"compile_job": job.job_id, "model": model.model_id, "device": self.hub_device.name,
                                  "os": self.hub_device.os, "options": qnn["compile_options"]})

    def is_built(self, handle: str) -> bool:
        """A cached compile job is reused unless the service no longer knows it or it failed for a reason other
        than the model (the service's own trouble is worth a new job; a refused op is not)."""
        try:
            status = self.call(self._job(handle).get_status)
        except RbenchError:
            return False
        return not status.failure or compile_failure_status(status.message) == "unsupported"

    # ------------------------------------------------------------------------------------------ jobs

    @cached_property
    def _jobs(self) -> dict[str, Any]:
        return {}

    def _job(self, job_id: str) -> Any:
        """The client's job object, fetched once per job (its status is memoised once the job has ended)."""
        if job_id not in self._jobs:
            self._jobs[job_id] = self.call(self.client.get_job, job_id)
        return self._jobs[job_id]

    def profile_options(self, artifact: Artifact, protocol: Protocol) -> str:
        compute_unit = artifact.manifest["qnn"].get("compute_unit", "npu")
        return (f"--max_profiler_iterations {protocol.min_iters} --max_profiler_time {math.ceil(protocol.max_time_s)}"
                f" --compute_unit {compute_unit} --qairt_version {self.settings.qairt}")

    def submit(self, prepared: Prepared, protocol: Protocol,
               inputs: dict[str, np.ndarray] | None = None) -> Submission:
        target = self._job(prepared.handle).get_target_model()
        dataset = None
        if inputs is not None:
            dataset = self.call(self.client.upload_dataset, _entries(inputs), name=prepared.artifact.path.stem)
        options = self.profile_options(prepared.artifact, protocol)
        submitted_at = time.time()
        jobs = [self.call(self.client.submit_inference_job, target, device=self.hub_device, inputs=dataset,
                          name=f"{prepared.artifact.path.stem} ({index + 1}/{protocol.processes})", options=options,
                          profile=True)
                for index in range(protocol.processes)]
        return Submission({"compile": [prepared.handle], "profile": [job.job_id for job in jobs]}, submitted_at,
                          {"device": self.hub_device.name, "os": self.hub_device.os, "options": options,
                           "dataset": dataset.dataset_id if dataset is not None else None})

    def states(self, submission: Submission) -> dict[str, str]:
        return {job: job_state(self.call(self._job(job).get_status).code) for job in submission.job_ids}

    def collect(self, prepared: Prepared, submission: Submission, protocol: Protocol) -> Collected:
        compile_job = submission.jobs["compile"][0]
        status = self.call(self._job(compile_job).get_status)
        if status.failure:
            raise JobFailed(f"AI Hub compile job {compile_job} failed: {status.message}",
                            compile_failure_status(status.message))
        profiles, versions = [], []
        for job_id in submission.jobs["profile"]:
            job = self._job(job_id)
            status = self.call(job.get_status)
            if status.failure:
                raise JobFailed(f"AI Hub profile job {job_id} failed: {status.message}")
            profile, version = self._profile(job_id)
            profiles.append(profile)
            versions.append(version)
        outputs = None
        if submission.details.get("dataset"):
            outputs = self._outputs(self._job(submission.jobs["profile"][0]), prepared.artifact)
        return Collected(self._measurement(profiles, versions, submission), outputs)

    def _profile(self, job_id: str) -> tuple[HubProfile, dict[str, Any]]:
        """A finished job's profile and its detail's version and tool versions (QAIRT), from one results request:
        the versions are in the protobuf only, so it is converted with the client's own function (the one its
        ``download_profile`` uses), not fetched twice."""
        from qai_hub import public_rest_api
        from qai_hub.client import _profile_pb_to_python_dict

        detail = self.call(public_rest_api.get_job_results, self.client.config, job_id).inference_job_result.detail
        return parse_profile(_profile_pb_to_python_dict(detail)), {
            "detail_version": f"{detail.major_version}.{detail.minor_version}",
            "tool_versions": {tool.name: tool.version for tool in detail.tool_versions}}

    def _outputs(self, job: Any, artifact: Artifact) -> list[np.ndarray]:
        """The job's outputs for the uploaded inputs, in manifest order (the compiled model keeps the names)."""
        data = self.call(job.download_output_data)
        names = [spec["name"] for spec in artifact.manifest["outputs"]]
        if len(data) == len(names) == 1:
            return [np.asarray(next(iter(data.values()))[0])]
        missing = [name for name in names if name not in data]
        if missing:
            raise JobFailed(f"AI Hub job {job.job_id} returned outputs {sorted(data)}, not {missing}")
        return [np.asarray(data[name][0]) for name in names]

    def _measurement(self, profiles: list[HubProfile], versions: list[dict[str, Any]],
                     submission: Submission) -> Measurement:
        records, reasons = [], []
        for index, profile in enumerate(profiles):
            samples = list(profile.samples_ms)
            if not samples and profile.estimated_ms is not None:
                samples = [profile.estimated_ms]
                reasons.append(f"job {index + 1}: the profile (detail {versions[index]['detail_version']}) has no "
                               "per-iteration times; the service's estimate stands for them")
            memory = profile.inference_peak_mib
            records.append(ProcessRecord(samples, load_cold_ms=profile.first_load_ms,
                                         load_warm_ms=profile.warm_load_ms,
                                         peak_memory_mb=memory[1] if memory else None))
        layers = [{unit: share.layers for unit, share in p.placement.units.items()} for p in profiles]
        if any(counts != layers[0] for counts in layers):
            reasons.append(f"the jobs placed layers on different compute units: {layers}")
        first = profiles[0]
        extra = {"hosted": HOSTED, "estimated_inference_ms": [p.estimated_ms for p in profiles],
                 "placement": first.placement.to_dict(), "placement_text": describe_placement(first.placement),
                 "memory_mib": {"inference": first.inference_peak_mib, "first_load": first.first_load_peak_mib,
                                "warm_load": first.warm_load_peak_mib},
                 "on_device_compile_ms": [p.compile_ms for p in profiles]}
        receipt = {"service": "Qualcomm AI Hub", "client": str(self.hub.__version__), **submission.details,
                   "compile_job": submission.jobs["compile"][0], "profile_jobs": submission.jobs["profile"],
                   **versions[0]}
        return Measurement(records, self.describe(), receipt, extra, reasons)

    def infer(self, prepared: Prepared, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference job (no profiling) on the device with ``inputs``, waited for up to the deadline."""
        target = self._job(prepared.handle).get_target_model()
        job = self.call(self.client.submit_inference_job, target, device=self.hub_device, inputs=_entries(inputs),
                        options=f"--qairt_version {self.settings.qairt}", profile=False)
        status = self.call(job.wait, timeout=self.settings.deadline_s)
        if status.failure:
            raise JobFailed(f"AI Hub inference job {job.job_id} failed: {status.message}")
        return self._outputs(job, prepared.artifact)

    def describe(self) -> dict[str, Any]:
        return {"service": "Qualcomm AI Hub", "device": self.settings.device_name or self.settings.chipset,
                "latency": "each profile job's all_inference_times (µs → ms); estimated_inference_time kept beside",
                "process": "one inference job with profile=True: a fresh session on a hosted phone",
                "load_cold": "first_load_time of each job", "load_warm": "warm_load_time of each job",
                "memory": "upper bound of inference_memory_peak_range (MiB)", "hosted": HOSTED,
                "qairt": self.settings.qairt}


def _entries(inputs: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Inputs as the client's dataset entries: one sample per input name."""
    return {name: [np.ascontiguousarray(array, dtype=np.float32)] for name, array in inputs.items()}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
