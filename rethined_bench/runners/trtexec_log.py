"""Parse what trtexec (TensorRT 8.0 to 10.x) prints, and its ``--exportTimes`` JSON: text in, dataclasses out.

Pure: no I/O, no other runner imported, so the ``ssh-trtexec`` runner and ``rbench ingest`` share it. The formats
it reads are in ``../shared/reference/backends.md`` §2.4 and the real logs under ``../shared/fixtures/trtexec/``:

- Log lines are ``[MM/DD/YYYY-HH:MM:SS] [I] message`` (severity V, I, W, E or F); pasted logs may drop the
  timestamp (``[E] Error[4]: ...``), trailing spaces, the head or the tail.
- Metrics are only the ``[I]`` lines after ``=== Performance summary ===``: ``--verbose`` adds ``[V]`` explanation
  lines that also start with ``Latency:``, ``Throughput:``, ``GPU Compute Time:``.
- 8.0/8.2 print one percentile and an ``End-to-End Host Latency`` line, 8.4 one percentile without it, 8.5+ several.
- The load lines change meaning with the version (see :attr:`TrtexecLog.load_ms_cold`).

All times are milliseconds (trtexec's seconds converted). Text that is not trtexec output at all raises
:class:`TrtexecLogError`; anything else parses to what the text holds, with ``None`` for what it lacks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_LOG_LINE = re.compile(r"^(?:\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\]\s*)?\[(?P<severity>[VIWEF])\](?:\s(?P<message>.*))?$")
_STATUS_LINE = re.compile(r"^&&&& (?P<state>RUNNING|PASSED|FAILED) TensorRT\.trtexec"
                          r"(?: \[TensorRT v(?P<code>\d+)\])?(?: \[b\d+\])?(?: # (?P<command>.*))?$")
_SHELL_COMMAND = re.compile(r"^(?:\$\s*)?(?P<command>(?:\S*/)?trtexec(?:\.exe)?\s.*)$")
_SECTION = re.compile(r"^=== (?P<name>.+?) ===$")
_VERSION = re.compile(r"^TensorRT version: (?P<version>\d+(?:\.\d+)*)$")
_DEVICE = re.compile(r"^Selected Device: (?P<name>.+)$")
_SECONDS = {key: re.compile(rf"^Engine {key} in (?P<value>{_NUMBER}) sec\.?$")
            for key in ("built", "loaded", "deserialized")}
# --timeDeserialize (8.4+): one timed deserialization, then 20 more; 8.6+ names the count and the unit twice
_DESERIALIZE_FIRST = re.compile(rf"^First deserialization time = (?P<value>{_NUMBER}) milliseconds$")
_DESERIALIZE_TOTAL = re.compile(rf"^Total deserialization time = (?P<total>{_NUMBER}) milliseconds"
                                rf"(?: in (?P<runs>\d+) iterations)?, average time = (?P<average>{_NUMBER})"
                                rf"(?: milliseconds)?, first time = (?P<first>{_NUMBER})(?: milliseconds)?\.$")
_ENGINE_SIZE = re.compile(rf"^\[TRT\] Loaded engine size: (?P<value>{_NUMBER}) (?P<unit>MiB|MB)$")
_TIMED_QUERIES = re.compile(r"^Timing trace has (?P<count>\d+) queries over ")
_COV = re.compile(rf"coefficient of variance = (?P<value>{_NUMBER})%")
_THROUGHPUT = re.compile(rf"^Throughput: (?P<value>{_NUMBER}) qps$")
_TOTAL = re.compile(rf"^Total (?P<name>Host Walltime|GPU Compute Time): (?P<value>{_NUMBER}) s$")
_STAT_LINE = re.compile(r"^(?P<metric>Latency|End-to-End Host Latency|Enqueue Time|H2D Latency|GPU Compute Time"
                        r"|D2H Latency): (?P<body>.*)$")
_STAT_ITEM = re.compile(rf"(?P<key>min|max|mean|median|percentile\((?P<percent>{_NUMBER})%\)) = "
                        rf"(?P<value>{_NUMBER}) ms")

SUMMARY_HEADER = "Performance summary"
# lowest first: a build allowed several precisions ("FP32+FP16") may run any, so the lowest names it
_PRECISIONS = ("int4", "fp8", "int8", "bf16", "fp16", "fp32")
_CONTEXT_LINES = 3
_MB_PER_MIB = 2**20 / 1e6


class TrtexecLogError(ValueError):
    """The text is not trtexec output, or the JSON is not an ``--exportTimes`` file."""


@dataclass(frozen=True)
class Stat:
    """One summary line, e.g. ``Latency: min = ... ms, ..., percentile(99%) = ... ms``.

    ``percentiles_ms`` holds every percentile printed, keyed ``"p90"``, ``"p99"``, ``"p99.9"``: one (p99 by
    default) in 8.0-8.4, ``--percentile`` many (90,95,99 by default) from 8.5. trtexec's are nearest-rank.
    """

    min_ms: float
    max_ms: float
    mean_ms: float
    median_ms: float
    percentiles_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PerformanceSummary:
    """The ``=== Performance summary ===`` block; a line the (possibly trimmed) log lacks is ``None``.

    ``latency`` is H2D + GPU compute + D2H per query (host timed; equal to ``gpu_compute_time`` under
    ``--noDataTransfers``); ``end_to_end_host_latency`` (8.0/8.2 only) also waits for the previous query.
    """

    throughput_qps: float | None = None
    latency: Stat | None = None
    end_to_end_host_latency: Stat | None = None
    enqueue_time: Stat | None = None
    h2d_latency: Stat | None = None
    gpu_compute_time: Stat | None = None
    d2h_latency: Stat | None = None
    total_host_walltime_ms: float | None = None
    total_gpu_compute_time_ms: float | None = None


@dataclass(frozen=True)
class TrtexecLog:
    """What one trtexec run printed.

    - ``version``: ``x.y.z`` from ``TensorRT version:`` (8.0 prints an integer, ``8003``), else from the banner
      ``[TensorRT v8201]`` / ``[TensorRT v101401]``.
    - ``passed``: ``&&&& PASSED`` → True, ``&&&& FAILED`` → False, neither (trimmed log) → None.
    - ``command``: the command after ``#`` on the ``&&&& RUNNING`` line (else on the PASSED/FAILED line, else a
      pasted shell line starting with ``trtexec``).
    - ``errors``: every ``[E]``/``[F]`` message, timestamped or not (continuation lines without a prefix, such as an
      ONNX node dump, are not included). ``context``: for a failure without any, its last few ``[I]``/``[W]``
      messages before ``&&&& FAILED``.
    - ``options``: the ``Key: value`` lines of the ``=== ... Options ===`` sections, e.g. ``Precision``,
      ``Data transfers``, ``CUDA Graph``, ``Spin-wait``.
    - ``build_ms`` (``Engine built in``): 8.0/8.2 parse + build + deserialisation of the built engine (its
      ``Loaded engine size`` line comes first); 8.4+ parse + build + serialisation only.
    - ``engine_loaded_ms`` (``Engine loaded in``, ``--loadEngine`` in 8.x): 8.0/8.2 file read + runtime creation +
      deserialisation (printed after ``Loaded engine size``); 8.4-9.x file read only (printed before it). 10.x does
      not print it.
    - ``deserialize_ms`` (``Engine deserialized in``, 8.4+): runtime creation + ``deserializeCudaEngine``, after a
      build (from memory) or a ``--loadEngine`` (10.x streams the file inside it).
    - ``engine_size_mib``: ``[TRT] Loaded engine size``, an integer; 8.0 labels it ``MB``, taken at its word and
      converted (× 10^6 / 2^20).
    - ``cov_percent``: the ``coefficient of variance = X%`` of GPU compute time that trtexec warns about (above
      1.0% up to 10.13, 2.5% from 10.14); ``None`` when it did not warn.
    - ``precision``: lowest precision the build allowed, from ``Precision: FP32+FP16`` or ``--fp16``/``--int8``/...
      in the command; ``None`` for a ``--loadEngine`` run (8.x still prints the default build options there, which
      say nothing about the engine) or a strongly typed build.
    - ``engine_loaded_from_file``: the run loaded a saved engine (``--loadEngine``); when the command is not in the
      log, inferred from a load/deserialise line without ``Engine built in``; ``None`` when nothing tells.
    - ``timed_queries``: the count in ``Timing trace has N queries`` (not printed by every version).
    - ``deserialize_first_ms``, ``deserialize_average_ms``, ``deserialize_runs`` (``--timeDeserialize``, 8.4+: the
      engine is deserialized from memory, the first time after 8.6+'s two untimed warm-ups, then ``runs`` more
      times, 20, averaged): the repeated, warm deserialization. ``runs`` is ``None`` where the line omits it (8.4).
    """

    version: str | None
    passed: bool | None
    command: str | None
    errors: list[str]
    context: list[str]
    options: dict[str, str]
    device_name: str | None
    summary: PerformanceSummary | None
    build_ms: float | None
    engine_loaded_ms: float | None
    deserialize_ms: float | None
    engine_size_mib: float | None
    cov_percent: float | None
    precision: str | None
    engine_loaded_from_file: bool | None
    timed_queries: int | None
    deserialize_first_ms: float | None
    deserialize_average_ms: float | None
    deserialize_runs: int | None

    @property
    def load_ms_cold(self) -> float | None:
        """Time to bring a saved engine up, from the load lines of a ``--loadEngine`` run (``None`` after a build).

        8.0/8.2: ``Engine loaded in`` (read + runtime + deserialise); 8.4-9.x: ``Engine loaded in`` (read) +
        ``Engine deserialized in`` (runtime + deserialise); 10.x: ``Engine deserialized in`` alone (runtime +
        streamed read + deserialise). No version times execution-context creation, which rbench's own
        ``load_cold`` includes.
        """
        if not self.engine_loaded_from_file:
            return None
        if self.deserialize_ms is not None:
            return (self.engine_loaded_ms or 0.0) + self.deserialize_ms
        return self.engine_loaded_ms

    @property
    def load_covers(self) -> str | None:
        """What :attr:`load_ms_cold` includes, in words, to store beside it."""
        if self.load_ms_cold is None:
            return None
        if self.deserialize_ms is None:
            return "file read + runtime creation + deserialization (trtexec 'Engine loaded in', TensorRT 8.0/8.2)"
        if self.engine_loaded_ms is None:
            return "runtime creation + deserialization (trtexec 'Engine deserialized in', TensorRT 10.x)"
        return "file read ('Engine loaded in') + runtime creation + deserialization ('Engine deserialized in')"


@dataclass(frozen=True)
class ExportedTimes:
    """Per-query times of ``--exportTimes`` (warm-up queries excluded by trtexec), in milliseconds.

    ``latency_ms`` is ``latencyMs`` (H2D + compute + D2H, the summary's Latency), ``compute_ms`` is ``computeMs``
    (GPU Compute Time); ``end_to_end_ms`` is ``endToEndMs`` where every query has it (8.2.1 writes it).
    """

    latency_ms: list[float]
    compute_ms: list[float]
    end_to_end_ms: list[float] | None


def _log_lines(text: str) -> list[tuple[str, str]]:
    """``(severity, message)`` per line; ``""`` severity for lines that are not log lines (kept stripped)."""
    lines = []
    for raw in text.lstrip("\ufeff").splitlines():
        line = raw.strip()
        match = _LOG_LINE.match(line)
        lines.append((match["severity"], (match["message"] or "").strip()) if match else ("", line))
    return lines


def _sections(lines: list[tuple[str, str]]) -> dict[str, list[str]]:
    """``[I]`` messages grouped under their ``=== Name ===`` header (the same name twice: the later one wins)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for severity, message in lines:
        if severity != "I":
            continue
        header = _SECTION.match(message)
        if header:
            current = sections[header["name"]] = []
        elif current is not None:
            current.append(message)
    return sections


def _status(lines: list[tuple[str, str]]) -> tuple[bool | None, str | None, str | None]:
    """``(passed, command, banner version)`` from the ``&&&&`` lines, a pasted shell line as command fallback."""
    passed, command, code, shell = None, None, None, None
    for severity, message in lines:
        status = _STATUS_LINE.match(message) if not severity else None
        if status:
            code, command = code or status["code"], command or status["command"]  # RUNNING comes first
            if status["state"] != "RUNNING":
                passed = status["state"] == "PASSED"
        elif not severity and shell is None and (pasted := _SHELL_COMMAND.match(message)):
            shell = pasted["command"]
    return passed, command or shell, code and _version_from_code(int(code))


def _version_from_code(code: int) -> str:
    """``8003`` → ``8.0.3``, ``8201`` → ``8.2.1`` (major·1000 + minor·100 + patch up to 9.x); ``101401`` →
    ``10.14.1`` (major·10000 + minor·100 + patch from 10.0)."""
    if code >= 100000:
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return f"{code // 1000}.{code // 100 % 10}.{code % 100}"


def _normalise_version(printed: str) -> str:
    """``TensorRT version:`` as ``x.y.z``, whether printed dotted or as 8.0's integer."""
    if "." not in printed:
        return _version_from_code(int(printed))
    parts = (printed.split(".") + ["0", "0"])[:3]
    return ".".join(str(int(part)) for part in parts)


def _seconds_to_ms(printed: str) -> float:
    """trtexec's seconds as milliseconds, shifted in decimal so ``0.0316321`` gives exactly ``31.6321``."""
    return float(Decimal(printed).scaleb(3))


def _first(pattern: re.Pattern[str], messages: list[str]) -> re.Match[str] | None:
    return next((m for m in map(pattern.search, messages) if m), None)


def _engine_time_ms(messages: list[str], key: str) -> float | None:
    match = _first(_SECONDS[key], messages)
    return _seconds_to_ms(match["value"]) if match else None


def _stat(body: str) -> Stat | None:
    """A summary line's numbers; ``None`` when min, max, mean or median is missing (a mangled line)."""
    values: dict[str, float] = {}
    percentiles: dict[str, float] = {}
    for item in _STAT_ITEM.finditer(body):
        if item["percent"] is not None:
            percentiles[f"p{item['percent']}"] = float(item["value"])
        else:
            values[item["key"]] = float(item["value"])
    if set(values) != {"min", "max", "mean", "median"}:
        return None
    return Stat(min_ms=values["min"], max_ms=values["max"], mean_ms=values["mean"], median_ms=values["median"],
                percentiles_ms=percentiles)


_STAT_FIELDS = {"Latency": "latency", "End-to-End Host Latency": "end_to_end_host_latency",
                "Enqueue Time": "enqueue_time", "H2D Latency": "h2d_latency", "GPU Compute Time": "gpu_compute_time",
                "D2H Latency": "d2h_latency"}
_TOTAL_FIELDS = {"Host Walltime": "total_host_walltime_ms", "GPU Compute Time": "total_gpu_compute_time_ms"}


def _summary(messages: list[str] | None) -> PerformanceSummary | None:
    """The ``[I]`` lines of the summary section; ``None`` when the log has no summary header."""
    if messages is None:
        return None
    fields: dict[str, Any] = {}
    for message in messages:
        if stat := _STAT_LINE.match(message):
            fields[_STAT_FIELDS[stat["metric"]]] = _stat(stat["body"])
        elif total := _TOTAL.match(message):
            fields[_TOTAL_FIELDS[total["name"]]] = _seconds_to_ms(total["value"])
        elif throughput := _THROUGHPUT.match(message):
            fields["throughput_qps"] = float(throughput["value"])
    return PerformanceSummary(**fields)


def _options(sections: dict[str, list[str]]) -> dict[str, str]:
    """``Key: value`` lines of every ``... Options`` section (``Dump refittable layers:Disabled`` has no space)."""
    options = {}
    for name, messages in sections.items():
        if name.endswith("Options"):
            for message in messages:
                key, colon, value = message.partition(":")
                if colon and key:
                    options[key.strip()] = value.strip()
    return options


def _engine_loaded_from_file(command: str | None, build_ms: float | None, loaded_ms: float | None,
                             deserialize_ms: float | None) -> bool | None:
    """``--loadEngine`` in the command; without one, a load line and no build line (a trimmed ``--loadEngine``
    log: every version prints ``Engine built in`` before its deserialisation)."""
    if command is not None:
        return any(token.startswith("--loadEngine") for token in command.split())
    if build_ms is not None:
        return False
    return True if loaded_ms is not None or deserialize_ms is not None else None


def _precision(options: dict[str, str], command: str | None, loaded: bool | None) -> str | None:
    """The lowest precision the build allowed (see :class:`TrtexecLog`)."""
    if loaded:
        return None
    modes = {part.strip().lower() for part in options.get("Precision", "").split("+")}
    modes |= {token[2:].lower() for token in (command or "").split() if token.startswith("--")}
    return next((mode for mode in _PRECISIONS if mode in modes), None)


def _engine_size_mib(messages: list[str]) -> float | None:
    match = _first(_ENGINE_SIZE, messages)
    if match is None:
        return None
    value = float(match["value"])
    return value / _MB_PER_MIB if match["unit"] == "MB" else value


def _failure_context(lines: list[tuple[str, str]]) -> list[str]:
    """The last ``[I]``/``[W]`` messages before ``&&&& FAILED``: what a failure without ``[E]`` lines leaves."""
    end = next((i for i, (severity, message) in enumerate(lines)
                if not severity and message.startswith("&&&& FAILED")), len(lines))
    meaningful = [message for severity, message in lines[:end] if severity in ("I", "W") and message]
    return meaningful[-_CONTEXT_LINES:]


def _is_trtexec(lines: list[tuple[str, str]]) -> bool:
    """A ``&&&& ... TensorRT.trtexec`` line, a ``TensorRT version:`` line or a performance summary header."""
    for severity, message in lines:
        if not severity and _STATUS_LINE.match(message):
            return True
        if severity == "I" and (_VERSION.match(message) or message == f"=== {SUMMARY_HEADER} ==="):
            return True
    return False


def parse_log(text: str) -> TrtexecLog:
    """Parse trtexec's console output; raises :class:`TrtexecLogError` when the text is not trtexec output."""
    if not isinstance(text, str):
        raise TrtexecLogError(f"trtexec output must be text, not {type(text).__name__}")
    lines = _log_lines(text)
    if not _is_trtexec(lines):
        raise TrtexecLogError("not trtexec output: no '&&&& RUNNING/PASSED/FAILED TensorRT.trtexec' line, "
                              "no 'TensorRT version:' line and no performance summary")
    passed, command, banner_version = _status(lines)
    info = [message for severity, message in lines if severity == "I"]
    version = _first(_VERSION, info)
    sections = _sections(lines)
    options = _options(sections)
    build_ms, deserialize_ms = _engine_time_ms(info, "built"), _engine_time_ms(info, "deserialized")
    loaded_ms = _engine_time_ms(info, "loaded")
    loaded = _engine_loaded_from_file(command, build_ms, loaded_ms, deserialize_ms)
    errors = [message for severity, message in lines if severity in ("E", "F")]
    cov = _first(_COV, [message for severity, message in lines if severity == "W"])
    timed = _first(_TIMED_QUERIES, info)
    device = _first(_DEVICE, info)
    first, total = _first(_DESERIALIZE_FIRST, info), _first(_DESERIALIZE_TOTAL, info)
    return TrtexecLog(
        version=_normalise_version(version["version"]) if version else banner_version,
        passed=passed, command=command, errors=errors,
        context=_failure_context(lines) if passed is False and not errors else [],
        options=options, device_name=device["name"] if device else None,
        summary=_summary(sections.get(SUMMARY_HEADER)),
        build_ms=build_ms, engine_loaded_ms=loaded_ms, deserialize_ms=deserialize_ms,
        engine_size_mib=_engine_size_mib(info), cov_percent=float(cov["value"]) if cov else None,
        precision=_precision(options, command, loaded), engine_loaded_from_file=loaded,
        timed_queries=int(timed["count"]) if timed else None,
        deserialize_first_ms=float(total["first"]) if total else float(first["value"]) if first else None,
        deserialize_average_ms=float(total["average"]) if total else None,
        deserialize_runs=int(total["runs"]) if total and total["runs"] else None,
    )


def _query_times(data: Any, key: str, required: bool) -> list[float] | None:
    """Every query's ``key`` as a finite, non-negative float; ``None`` for an optional key some query lacks."""
    values = []
    for index, query in enumerate(data, 1):
        value = query.get(key)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise TrtexecLogError(f"--exportTimes query {index}: '{key}' must be a finite number of ms >= 0, "
                                  f"not {value!r}")
        values.append(float(value))
    return values


def parse_export_times(data: list[dict[str, Any]]) -> ExportedTimes:
    """Per-query latency and compute times from ``--exportTimes`` JSON (already decoded)."""
    if not isinstance(data, list) or not data or not all(isinstance(query, dict) for query in data):
        raise TrtexecLogError("not an --exportTimes file: expected a non-empty JSON list of per-query objects")
    latency = _query_times(data, "latencyMs", required=True)
    if not all(latency):
        raise TrtexecLogError("--exportTimes: a query has 'latencyMs' 0; the file is not a timing trace")
    return ExportedTimes(latency_ms=latency, compute_ms=_query_times(data, "computeMs", required=True),
                         end_to_end_ms=_query_times(data, "endToEndMs", required=False))
