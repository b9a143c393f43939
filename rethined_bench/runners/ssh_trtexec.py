"""TensorRT's trtexec over SSH (``ssh-trtexec``): a Jetson Nano, or any device with trtexec, no Python needed there.

- **prepare**: copy the artifact's ONNX to ``remote_dir`` and build the engine there with the device's own TensorRT
  (``trtexec --onnx --saveEngine [--fp16]``), never cross-built. Engines are content-addressed by artifact sha256 and
  TensorRT version on the device and reused while they exist; the build log stays beside the engine. A failed build
  (an unsupported op, the Nano's 4 GB shared memory running out) raises with trtexec's error lines.
- **measure**: the protocol's processes are fresh ``trtexec --loadEngine`` processes: ``--iterations`` and
  ``--duration`` are the protocol's minimum iterations and time (trtexec too runs until both are met; its warm-up is
  by time, 200 ms when the protocol asks for warm-up), ``--useSpinWait``, and ``--exportTimes``, whose per-inference
  ``latencyMs`` (H2D + GPU compute + D2H) rbench computes its own statistics from, with ``computeMs`` kept beside
  it. Cold load is what that version's load lines cover (:attr:`TrtexecLog.load_ms_cold`); warm load is the average
  of trtexec's ``--timeDeserialize`` (20 deserializations from memory in one more process per cell) where the
  device's trtexec has the flag (8.4+; not TensorRT 8.2 on a Nano). Before and after each process the power mode
  (``nvpmodel -q``), clocks (``jetson_clocks --show``) and thermal zones with their passive trip points are read; a
  GPU clock below its maximum or falling during a process, or a zone that heats up to its passive trip point (where
  the kernel starts throttling), marks the cell unstable.
- **infer**: ``--loadInputs`` / ``--exportOutput`` (outputs as JSON), for parity of the engine itself.

An unreachable host, a missing trtexec, a timeout or a dropped connection is one line (the cell's reason); Ctrl-C
stops what rbench started on the device. Per-run files (exported times, inputs, outputs) are removed unless
``keep_remote``.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..measure.protocol import Protocol
from ..measure.record import Measurement, ProcessRecord
from ..settings import env_name, setting
from .base import Availability, Build, Prepared, Runner
from .ssh import RemoteError, SshHost, quote
from .trtexec_log import TrtexecLogError, parse_export_times, parse_log

TIME_DESERIALIZE = "--timeDeserialize"
WARMUP_MS = 200  # trtexec's default warm-up, used whenever the protocol asks for warm-up
LOCK_CLOCKS = "on the device: `sudo nvpmodel -m 0 && sudo jetson_clocks` (MAXN, clocks locked at their maxima)"
_POWER_MODE = re.compile(r"NV Power Mode:\s*(\S+)")
_GPU_CLOCKS = re.compile(r"^GPU MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class SshTrtexecSettings:
    host: str = setting("", help="host name, address or ~/.ssh/config alias of the device")
    user: str = setting("", help="login (default: ssh's choice, e.g. from ~/.ssh/config)")
    port: int | None = setting(None, help="SSH port (default: ssh's choice)")
    key_file: str = setting("", help="private key (default: ssh's agent and keys)")
    ssh_config: str = setting("", help="an ssh_config file to use instead of ~/.ssh/config")
    remote_dir: str = setting("/tmp/rbench", help="where ONNX files, engines and logs live on the device")
    trtexec: str = setting("/usr/src/tensorrt/bin/trtexec", help="trtexec on the device")
    tensorrt: str = setting("", help="the TensorRT version the device must have (e.g. 8.2); empty: any")
    thermal_zones: str = setting("/sys/devices/virtual/thermal/thermal_zone*", help="sysfs thermal zones (glob)")
    connect_timeout_s: int = setting(10, help="seconds to wait for the SSH connection")
    timeout_s: int = setting(3600, help="limit for one remote command (an engine build on a Nano takes minutes)")
    keep_remote: bool = setting(False, help="keep per-run files (exported times, inputs, outputs) on the device")


class SshTrtexecRunner(Runner):
    """A device with TensorRT reached over SSH; trtexec builds, runs and times on the device."""

    name = "ssh-trtexec"
    target = "tensorrt"
    settings_class = SshTrtexecSettings

    @cached_property
    def remote(self) -> SshHost:
        s = self.settings
        return SshHost(s.host, s.user, s.port, s.key_file, s.ssh_config, s.connect_timeout_s)

    # ------------------------------------------------------------------------------------------ reachability

    def availability(self) -> Availability:
        if shutil.which("ssh") is None:
            return Availability(False, "the OpenSSH client (ssh) is not installed",
                                "install it (e.g. `apt-get install openssh-client`)")
        if not self.settings.host:
            return Availability(False, "no host configured",
                                f"set {env_name(self.device, 'host')} or [connection] host in a device profile "
                                f"(an ~/.ssh/config alias works); then {LOCK_CLOCKS}")
        try:
            version = self.toolchain()
        except RemoteError as exc:
            return Availability(False, str(exc), f"check the host, its SSH key and trtexec's path; {LOCK_CLOCKS}")
        expected = self.settings.tensorrt
        if expected and not (version == expected or version.startswith(expected + ".")):
            return Availability(False, f"{self.remote.label} has TensorRT {version}, the profile expects {expected}",
                                "set [toolchain] tensorrt (and onnx_opset) to what the device has")
        return Availability(True, fix=f"before measuring, {LOCK_CLOCKS}")

    @cached_property
    def _help(self) -> str:
        """``trtexec --help`` on the device: its banner names the TensorRT version, its flags what it can time."""
        trtexec = self.settings.trtexec
        return self.remote.run(f"test -x {shlex.quote(trtexec)} || {{ echo 'trtexec not found at {trtexec}' >&2; "
                               f"exit 3; }}; {shlex.quote(trtexec)} --help 2>&1",
                               timeout_s=self.settings.connect_timeout_s + 30).stdout

    def toolchain(self) -> str:
        """The device's TensorRT version, as its trtexec prints it (part of the engine cache key)."""
        try:
            version = parse_log(self._help).version
        except TrtexecLogError:
            version = None
        if version is None:
            raise RemoteError(f"{self.remote.label}: {self.settings.trtexec} does not print its TensorRT version")
        return version

    @property
    def times_deserialization(self) -> bool:
        """Whether the device's trtexec has ``--timeDeserialize`` (TensorRT 8.4+), rbench's warm load there."""
        return TIME_DESERIALIZE in self._help

    # ------------------------------------------------------------------------------------------ build

    def _path(self, artifact: Artifact, suffix: str) -> str:
        return f"{self.settings.remote_dir}/{artifact.path.stem}-{artifact.sha256[:12]}{suffix}"

    def build(self, artifact: Artifact) -> Build:
        """Copy the ONNX to the device and build the engine there with the manifest's precision."""
        precision = artifact.manifest["precision"]
        onnx, engine = self._path(artifact, ".onnx"), self._path(artifact, f"-{precision}-trt{self.toolchain()}.engine")
        log_path = engine + ".build.log"
        self._remote(f"mkdir -p {shlex.quote(self.settings.remote_dir)}")
        self.remote.put(artifact.path, onnx, timeout_s=self.settings.timeout_s)
        flags = artifact.manifest.get("tensorrt", {}).get("build_flags", [])
        command = quote([self.settings.trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", *flags])
        done = self._remote(f"{command} > {shlex.quote(log_path)} 2>&1; status=$?; cat {shlex.quote(log_path)}; "
                            f"exit $status", check=False)
        log = _parse(done.stdout, f"the build log of {artifact.path.name}")
        if done.returncode or log.passed is False:
            self._remote(f"rm -f {shlex.quote(engine)}", check=False)
            lines = log.errors or log.context
            details = "; ".join(dict.fromkeys(lines[:1] + lines[-1:])) or f"exit status {done.returncode}"
            raise RemoteError(f"trtexec could not build {artifact.path.name} on {self.remote.label}: {details} "
                              f"(log: {log_path})")
        return Build(engine, {"command": command, "build_log": log_path, "host": self.remote.label,
                              "tensorrt": log.version, "trtexec_build_ms": log.build_ms,
                              "engine_size_mib": log.engine_size_mib})

    def is_built(self, handle: str) -> bool:
        return self._remote(f"test -s {shlex.quote(handle)}", check=False).returncode == 0

    # ------------------------------------------------------------------------------------------ measure

    def trtexec_run(self, prepared: Prepared, protocol: Protocol, times: str) -> list[str]:
        """The argv of one measuring process: the protocol mapped onto trtexec's flags."""
        return [self.settings.trtexec, f"--loadEngine={prepared.handle}",
                f"--warmUp={WARMUP_MS if protocol.warmup else 0}", f"--iterations={protocol.min_iters}",
                f"--duration={math.ceil(protocol.min_time_s)}", "--useSpinWait", f"--exportTimes={times}"]

    def measure(self, prepared: Prepared, protocol: Protocol) -> Measurement:
        records, commands, telemetry, compute, reasons = [], [], [], [], []
        run = uuid.uuid4().hex[:8]
        for index in range(protocol.processes):
            times = f"{self.settings.remote_dir}/{run}-{index}.times.json"
            before = self.telemetry()
            argv = self.trtexec_run(prepared, protocol, times)
            log = _parse(self._remote(quote(argv) + " 2>&1").stdout, f"trtexec's output on {self.remote.label}")
            exported = parse_export_times(json.loads(self.remote.read(times, timeout_s=self.settings.timeout_s)))
            after = self.telemetry()
            self._cleanup(times)
            records.append(ProcessRecord(exported.latency_ms, load_cold_ms=log.load_ms_cold))
            commands.append(quote(argv))
            telemetry.append({"before": before, "after": after})
            compute.append(exported.compute_ms)
            reasons += clock_warnings(index, before, after) + thermal_warnings(index, before, after)
        settings = self.describe() | {"load_cold": f"{log.load_covers}, in each fresh trtexec process",
                                      "trtexec_cov_percent": log.cov_percent}
        extra = {"telemetry": telemetry, "gpu_compute_ms": compute}
        if self.times_deserialization:
            argv = [self.settings.trtexec, f"--loadEngine={prepared.handle}", TIME_DESERIALIZE]
            warm = _parse(self._remote(quote(argv) + " 2>&1", check=False).stdout,
                          f"trtexec {TIME_DESERIALIZE} on {self.remote.label}")
            commands.append(quote(argv))
            extra["deserialize_ms"] = {"first": warm.deserialize_first_ms, "average": warm.deserialize_average_ms,
                                       "runs": warm.deserialize_runs}
            records[-1] = replace(records[-1], load_warm_ms=warm.deserialize_average_ms)
        receipt = {"host": self.remote.label, "tensorrt": self.toolchain(), "commands": commands,
                   "engine": prepared.handle}
        return Measurement(records, settings, receipt, extra, reasons)

    def telemetry(self) -> dict[str, Any]:
        """Power mode, GPU clocks, thermal zones and their passive trip points on the device now (fields are None
        where a tool is missing)."""
        script = (f"echo '== nvpmodel'; nvpmodel -q 2>&1; echo '== clocks'; jetson_clocks --show 2>&1; "
                  f"echo '== thermal'; for zone in {self.settings.thermal_zones}; do "
                  f"[ -r \"$zone/temp\" ] || continue; trips=''; for trip in \"$zone\"/trip_point_*_type; do "
                  f"[ \"$(cat \"$trip\" 2>/dev/null)\" = passive ] && trips=\"$trips $(cat \"${{trip%_type}}_temp\")\"; "
                  f"done; echo \"$(cat \"$zone/type\") $(cat \"$zone/temp\")$trips\"; done; true")
        return parse_telemetry(self._remote(script).stdout)

    # ------------------------------------------------------------------------------------------ infer

    def infer(self, prepared: Prepared, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference on the device with the given inputs; outputs from ``--exportOutput`` in manifest order."""
        run = f"{self.settings.remote_dir}/{uuid.uuid4().hex[:8]}"
        loads = []
        with tempfile.TemporaryDirectory() as local:
            for name, array in inputs.items():
                path = Path(local) / f"{name}.bin"
                np.ascontiguousarray(array, dtype=np.float32).tofile(path)
                self.remote.put(path, f"{run}-{name}.bin", timeout_s=self.settings.timeout_s)
                loads.append(f"{name}:{run}-{name}.bin")
        output = f"{run}-outputs.json"
        argv = [self.settings.trtexec, f"--loadEngine={prepared.handle}", f"--loadInputs={','.join(loads)}",
                f"--exportOutput={output}", "--iterations=1", "--warmUp=0", "--duration=0"]
        self._remote(quote(argv) + " 2>&1")
        written = json.loads(self.remote.read(output, timeout_s=self.settings.timeout_s))
        exported = {entry["name"]: entry for entry in written}
        self._cleanup(output, *(load.split(":", 1)[1] for load in loads))
        return [_array(exported[spec["name"]]) for spec in prepared.artifact.manifest["outputs"]]

    def describe(self) -> dict[str, Any]:
        warm = (f"trtexec {TIME_DESERIALIZE}: average of its repeated deserializations from memory, one process "
                "per cell" if self.times_deserialization else
                f"not measured (this trtexec has no {TIME_DESERIALIZE}; it loads once per process)")
        return {"tool": "trtexec", "host": self.remote.label, "latency": "trtexec latencyMs: H2D + GPU compute + "
                "D2H per inference (--exportTimes), spin-wait synchronisation", "warmup_ms": WARMUP_MS,
                "input_copies": "included (H2D and D2H in every timed inference)", "load_warm": warm}

    # ------------------------------------------------------------------------------------------ plumbing

    def _remote(self, command: str, *, check: bool = True) -> Any:
        """Run on the device; on Ctrl-C, stop what rbench started there before giving up."""
        try:
            return self.remote.run(command, timeout_s=self.settings.timeout_s, check=check)
        except KeyboardInterrupt:
            self.stop_remote()
            raise

    def stop_remote(self) -> None:
        """Stop the trtexec processes rbench started on the device (best effort: the user is leaving).

        The pattern cannot match the shell that runs ``pkill`` itself: ``(load|save)`` is a regex there.
        """
        pattern = f"--(load|save)Engine={self.settings.remote_dir}/"
        try:
            self.remote.run(f"pkill -f -- {shlex.quote(pattern)}", timeout_s=15, check=False)
        except RemoteError:
            pass

    def _cleanup(self, *paths: str) -> None:
        if not self.settings.keep_remote:
            self._remote("rm -f " + " ".join(shlex.quote(path) for path in paths), check=False)


def _parse(text: str, what: str) -> Any:
    try:
        return parse_log(text)
    except TrtexecLogError as exc:
        raise RemoteError(f"{what} is not trtexec output: {exc}") from exc


def _array(entry: dict[str, Any]) -> np.ndarray:
    shape = tuple(int(d) for d in str(entry["dimensions"]).split("x"))
    return np.asarray(entry["values"], dtype=np.float32).reshape(shape)


def parse_telemetry(text: str) -> dict[str, Any]:
    """``nvpmodel -q``, ``jetson_clocks --show`` and thermal zones (``type temp [passive trip temps]``, milli-°C)
    as power mode, GPU MHz, °C per zone and each zone's lowest passive trip point in °C."""
    sections = dict(part.split("\n", 1) if "\n" in part else (part, "")
                    for part in text.split("== ")[1:])
    mode = _POWER_MODE.search(sections.get("nvpmodel", ""))
    clocks = _GPU_CLOCKS.search(sections.get("clocks", ""))
    thermal, trips = {}, {}
    for line in sections.get("thermal", "").splitlines():
        zone, *values = line.split()
        if not values or not all(v.lstrip("-").isdigit() for v in values):
            continue
        thermal[zone] = int(values[0]) / 1000
        if values[1:]:
            trips[zone] = min(int(v) for v in values[1:]) / 1000
    return {"power_mode": mode.group(1) if mode else None,
            "gpu_mhz": dict(zip(("min", "max", "current"), (int(v) / 1e6 for v in clocks.groups()))) if clocks
            else None, "thermal_c": thermal, "passive_trip_c": trips}


def clock_warnings(index: int, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Why process ``index``'s numbers cannot be trusted: a GPU clock below its maximum, or falling (throttling)."""
    start, end = before.get("gpu_mhz"), after.get("gpu_mhz")
    if not start or not end:
        return []
    if end["current"] < start["current"]:
        return [f"GPU clock fell from {start['current']:.0f} to {end['current']:.0f} MHz during process "
                f"{index + 1} (throttling)"]
    if start["current"] < start["max"]:
        return [f"GPU clock {start['current']:.0f} MHz below its {start['max']:.0f} MHz maximum in process "
                f"{index + 1}; {LOCK_CLOCKS}"]
    return []


def thermal_warnings(index: int, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Zones that heated up to their passive trip point during process ``index``: the kernel throttles there.
    A zone already at its trip point and unchanged (a fixed reading such as the Nano's PMIC-Die) is not news."""
    start, end, trips = before.get("thermal_c", {}), after.get("thermal_c", {}), after.get("passive_trip_c", {})
    return [f"{zone} reached {end[zone]:.1f} °C, its passive trip point ({trip:.1f} °C, where the kernel throttles), "
            f"during process {index + 1}"
            for zone, trip in trips.items()
            if zone in end and end[zone] >= trip and end[zone] > start.get(zone, float("-inf"))]
