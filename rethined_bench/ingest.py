"""``rbench ingest``: numbers measured where rbench cannot drive the device, stored as results with provenance.

Formats (``docs/ingest.md``), told apart by content, not by file extension:

- rows: a CSV with one row per cell, or a JSON object with a ``results`` list of the same fields (typically
  Xcode's Core ML performance report: median prediction and load time per compute unit);
- trtexec's console output (TensorRT 8.0-10.x, e.g. from a Jetson Nano): one cell, its latency statistics from the
  performance summary, load and build times from the engine lines, a failed build as a ``failed`` cell;
- trtexec's ``--exportTimes`` JSON (a list of per-query objects): one cell with rbench's own statistics over the
  per-query latencies, which are kept as samples;
- ai-hub-models' ``perf.yaml`` (both schemas): the numbers Qualcomm published for a model on AI Hub's devices, one
  cell per QNN runtime and precision on the profile's device, with the job id and QAIRT version as provenance.

A trtexec file does not say which model, resolution or device profile it measured, and a perf.yaml does not say
the input size: the caller passes them (:class:`CellOptions`, the CLI's ``--device/--model/--variant/--res``). Ingested results carry
``provenance.source = "ingested"`` and the tool that produced them, so reports can tell them from numbers rbench
measured itself. Everything is validated before anything is stored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .devices import PRECISIONS, DeviceProfile, get_profile
from .errors import RbenchError, UnknownNameError
from .measure.stats import summarize
from .models import get_model_spec
from .models.registry import ModelSpec
from .runners.aihub_perf_yaml import PerfYaml, PublishedPerf, parse_perf_yaml
from .runners.aihub_profile import Placement, UnitShare, describe_placement
from .runners.trtexec_log import PerformanceSummary, Stat, TrtexecLog, TrtexecLogError, parse_export_times, parse_log
from .store import Result, ResultStore

REQUIRED = ("model", "resolution", "latency_median_ms")
OPTIONAL = ("device", "variant", "compute_units", "load_ms", "load_warm_ms", "first_inference_ms", "precision",
            "source", "measured_at", "notes")
FORMATS = ("a CSV or JSON of result rows, trtexec output, an --exportTimes JSON or an ai-hub-models perf.yaml "
           "(see docs/ingest.md)")
# CoV of device compute time above which a cell is marked unstable (measurement.md §4; trtexec >= 10.14 warns too)
COMPUTE_COV_LIMIT_PERCENT = 2.5
TRTEXEC_TARGET = "tensorrt"
QNN_TARGET = "qnn"
# what AI Hub's model cards call the runtimes rbench's qnn target runs: DLC, context binary, the old schema's name
QNN_RUNTIMES = ("qnn_dlc", "qnn_context_binary", "qnn", "torchscript_onnx_qnn")
_PUBLISHED_PRECISIONS = {"float": "fp16", "fp16": "fp16", "w8a8": "int8", "int8": "int8"}  # "float" runs fp16 on HTP
_PERF_YAML = re.compile(r"^(?:models|precisions|aggregated):", re.MULTILINE)
_PERF_YAML_METRIC = "AI Hub's estimated inference time, as ai-hub-models published it (no samples)"
AIHUB_HOSTED = "published by Qualcomm from AI Hub's hosted, shared devices"
# provenance "format" of each trtexec file → how messages name it
_TRTEXEC_KINDS = {"log": "trtexec output", "exportTimes": "an --exportTimes file"}
_LATENCY_KEYS = ("median", "min", "max", "p90", "p99", "mean", "std", "cv", "n", "processes",
                 "median_of_process_medians")
_LOG_METRIC = "trtexec Latency: H2D + GPU compute + D2H per query, from its performance summary"
_TIMES_METRIC = "trtexec --exportTimes latencyMs: H2D + GPU compute + D2H per query"
# trtexec's option lines that say what a latency includes (measurement.md §1: stored with every row)
_RUN_OPTIONS = {"Data transfers": "data_transfers", "CUDA Graph": "cuda_graph", "Spin-wait": "spin_wait"}


@dataclass(frozen=True)
class CellOptions:
    """The cell a trtexec file measured, which the file does not say (``--device/--model/--variant/--res``)."""

    device: str | None = None
    model: str | None = None
    variant: str | None = None
    resolution: int | None = None

    @property
    def given(self) -> bool:
        """Whether any option was passed (they make no sense for result rows, which name their own cells)."""
        return any(value is not None for value in (self.device, self.model, self.variant, self.resolution))


@dataclass(frozen=True)
class IngestFile:
    """A file to ingest: its path, its text and the sha256 of its bytes (kept in the provenance)."""

    path: Path
    text: str
    sha256: str

    @classmethod
    def read(cls, path: Path) -> IngestFile:
        """Read once; undecodable bytes become U+FFFD so detection fails with a clear message, not a traceback."""
        if not path.is_file():
            raise RbenchError(f"ingest file not found: {path}")
        data = path.read_bytes()
        return cls(path, data.decode("utf-8-sig", errors="replace"), hashlib.sha256(data).hexdigest())


def _json_rows(path: Path, data: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and defaults of a JSON object (its keys other than ``results`` are defaults for every row)."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise RbenchError(f"{path}: expected an object with a 'results' list, or an --exportTimes list of "
                          "per-query objects (see docs/ingest.md)")
    return data["results"], {k: v for k, v in data.items() if k != "results"}


def _csv_rows(path: Path, text: str, json_error: json.JSONDecodeError) -> list[dict[str, Any]]:
    """CSV rows, when the header names a result field; otherwise the file is in no format ingest reads."""
    reader = csv.DictReader(io.StringIO(text))
    if not set(reader.fieldnames or ()) & set(REQUIRED):
        if path.suffix.lower() == ".json":
            raise RbenchError(f"{path} is not valid JSON ({json_error.msg} at line {json_error.lineno})")
        raise RbenchError(f"{path}: not {FORMATS}")
    return [dict(row) for row in reader]


def detect(source: IngestFile) -> tuple[str, Any]:
    """The file's format by content: ``("export-times", list)``, ``("rows", (rows, defaults))`` from JSON or CSV,
    ``("trtexec", TrtexecLog)`` or ``("perf-yaml", PerfYaml)``."""
    try:
        data = json.loads(source.text)
    except json.JSONDecodeError as exc:
        json_error = exc
    else:
        return ("export-times", data) if isinstance(data, list) else ("rows", _json_rows(source.path, data))
    try:
        return "trtexec", parse_log(source.text)
    except TrtexecLogError:
        pass
    if _PERF_YAML.search(source.text):
        return "perf-yaml", parse_perf_yaml(source.text, source=source.path.name)
    return "rows", (_csv_rows(source.path, source.text, json_error), {})


def _number(row: dict[str, Any], key: str, where: str, required: bool = False) -> float | None:
    value = row.get(key)
    if value in (None, ""):
        if required:
            raise RbenchError(f"{where}: missing '{key}'")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RbenchError(f"{where}: '{key}' must be a number of milliseconds, not {value!r}") from None
    if number <= 0:
        raise RbenchError(f"{where}: '{key}' must be positive")
    return number


def _cell(device: str, model: str, variant: str | None, resolution: int,
          profiles_dir: Path | None) -> tuple[DeviceProfile, ModelSpec, str, int]:
    """Validate a cell's names and size: the device profile, the model spec, its variant (default: the first)."""
    profile = get_profile(device, profiles_dir)
    spec = get_model_spec(model)
    variant = variant or spec.default_variant
    spec.variant_options(variant)
    spec.constraint.check(resolution, resolution)
    return profile, spec, variant, resolution


def _resolution(value: Any, where: str) -> int:
    """A row's square resolution in pixels (``1024`` or ``1024.0``); anything else is the user's error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RbenchError(f"{where}: 'resolution' must be a number of pixels, not {value!r}") from None
    if not number.is_integer():
        raise RbenchError(f"{where}: 'resolution' must be a whole number of pixels, not {value!r}")
    return int(number)


def _latency(**known: Any) -> dict[str, Any]:
    """A stored latency record holding what the source reported; every other statistic ``None``."""
    return {key: None for key in _LATENCY_KEYS} | {"unstable": False, "reasons": []} | known


def to_result(row: dict[str, Any], defaults: dict[str, Any], where: str, profiles_dir: Path | None) -> Result:
    row = defaults | {k: v for k, v in row.items() if v not in (None, "")}
    unknown = set(row) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise RbenchError(f"{where}: unknown field '{sorted(unknown)[0]}'; see docs/ingest.md")
    for key in REQUIRED:
        if key not in row:
            raise RbenchError(f"{where}: missing '{key}'")
    if "device" not in row:
        raise RbenchError(f"{where}: missing 'device' (per row or at the top of the JSON file)")
    profile, spec, variant, resolution = _cell(str(row["device"]), str(row["model"]),
                                               row.get("variant") and str(row["variant"]),
                                               _resolution(row["resolution"], where), profiles_dir)
    median = _number(row, "latency_median_ms", where, required=True)
    load = {"cold": _number(row, "load_ms", where), "warm": _number(row, "load_warm_ms", where)}
    compute_units = row.get("compute_units") or profile.toolchain.get("compute_units")
    return Result(
        device=profile.name, runner="ingest", model=spec.name, variant=variant, height=resolution,
        width=resolution, target=profile.target, precision=str(row.get("precision") or profile.precision),
        status="ok", latency=_latency(median=median),
        load=load if any(v is not None for v in load.values()) else None,
        first_inference_ms=_number(row, "first_inference_ms", where),
        settings={"compute_units": compute_units},
        provenance={"source": "ingested", "tool": row.get("source", "unspecified"),
                    "measured_at": row.get("measured_at"), "notes": row.get("notes"), "file": where.split(":")[0]},
    )


def _row_results(source: IngestFile, rows: list[dict[str, Any]], defaults: dict[str, Any], cell: CellOptions,
                 profiles_dir: Path | None) -> list[Result]:
    """One result per CSV/JSON row, each validated (the row number names a bad one)."""
    if cell.given:
        raise RbenchError(f"{source.path.name} holds result rows that name their own cells; --device, --model, "
                          "--variant and --res are for trtexec output and --exportTimes files")
    if not rows:
        raise RbenchError(f"{source.path}: no rows to ingest")
    return [to_result(row, defaults, f"{source.path.name}: row {i}", profiles_dir) for i, row in enumerate(rows, 1)]


def _trtexec_cell_result(source: IngestFile, cell: CellOptions, profiles_dir: Path | None, *, fmt: str,
                         version: str | None, precision: str | None, **fields: Any) -> Result:
    """A result for the cell named on the command line (``fmt``: ``log`` or ``exportTimes``)."""
    kind = _TRTEXEC_KINDS[fmt]
    missing = [flag for flag, value in (("--device", cell.device), ("--model", cell.model),
                                        ("--res", cell.resolution)) if value is None]
    if missing:
        raise RbenchError(f"{source.path.name} is {kind}, which does not say what it measured: pass --device, "
                          f"--model and --res (missing {', '.join(missing)})")
    profile, spec, variant, resolution = _cell(cell.device, cell.model, cell.variant, cell.resolution, profiles_dir)
    if profile.target != TRTEXEC_TARGET:
        raise RbenchError(f"{source.path.name} is {kind}, but device {profile.name} runs {profile.target} "
                          "artifacts, not TensorRT engines")
    precision = precision or profile.precision
    if precision not in PRECISIONS:
        raise RbenchError(f"{source.path.name}: the engine's precision {precision} is not one rbench stores "
                          f"({', '.join(PRECISIONS)})")
    return Result(device=profile.name, runner="ingest", model=spec.name, variant=variant, height=resolution,
                  width=resolution, target=profile.target, precision=precision,
                  provenance={"source": "ingested", "tool": "trtexec", "format": fmt, "version": version,
                              "file": source.path.name, "file_sha256": source.sha256},
                  **fields)


def _log_latency(stat: Stat, cov_percent: float | None) -> dict[str, Any]:
    """The summary's Latency line, unstable when trtexec's GPU compute CoV exceeds rbench's limit."""
    reasons = ([f"trtexec GPU compute CoV {cov_percent}% > {COMPUTE_COV_LIMIT_PERCENT}%"]
               if cov_percent is not None and cov_percent > COMPUTE_COV_LIMIT_PERCENT else [])
    return _latency(median=stat.median_ms, min=stat.min_ms, max=stat.max_ms, mean=stat.mean_ms,
                    p90=stat.percentiles_ms.get("p90"), p99=stat.percentiles_ms.get("p99"),
                    percentiles=stat.percentiles_ms, unstable=bool(reasons), reasons=reasons)


def _log_settings(log: TrtexecLog, summary: PerformanceSummary) -> dict[str, Any]:
    """What the stored latency includes and what else the summary said (only what the log printed)."""
    compute = summary.gpu_compute_time
    settings = {"latency": _LOG_METRIC, "gpu_compute_median_ms": compute.median_ms if compute else None,
                "throughput_qps": summary.throughput_qps, "queries": log.timed_queries,
                "cov_percent": log.cov_percent, "engine_size_mib": log.engine_size_mib}
    settings |= {key: log.options.get(option) for option, key in _RUN_OPTIONS.items()}
    return {key: value for key, value in settings.items() if value is not None}


def _environment(log: TrtexecLog) -> dict[str, Any] | None:
    """The TensorRT version and GPU name the log printed, in the shape of rbench's own environment record."""
    environment = {"versions": {"tensorrt": log.version} if log.version else None, "gpu": log.device_name}
    return {key: value for key, value in environment.items() if value} or None


def _failure_reason(log: TrtexecLog) -> str:
    """The ``[E]`` lines, or for a failure without any, what trtexec printed last (first: reports truncate)."""
    if log.errors:
        return "\n".join(log.errors)
    *earlier, last = log.context or ["nothing"]
    before = f" (before it: {' | '.join(earlier)})" if earlier else ""
    return f"trtexec FAILED with no [E] line, after: {last}{before}"


def _log_result(source: IngestFile, log: TrtexecLog, cell: CellOptions, profiles_dir: Path | None) -> Result:
    """One cell from trtexec's console output: ``ok`` with the summary, ``failed`` with the error lines."""
    common = dict(fmt="log", version=log.version, precision=log.precision, environment=_environment(log),
                  receipt={"command": log.command} if log.command else None)
    if log.passed is False:
        return _trtexec_cell_result(source, cell, profiles_dir, status="failed", reason=_failure_reason(log),
                                    **common)
    if log.summary is None or log.summary.latency is None:
        raise RbenchError(f"{source.path.name}: trtexec output without a performance summary (--dumpProfile "
                          "without --separateProfileRun?): no latency to store")
    load_ms = log.load_ms_cold
    return _trtexec_cell_result(
        source, cell, profiles_dir, status="ok", latency=_log_latency(log.summary.latency, log.cov_percent),
        settings=_log_settings(log, log.summary),
        load={"cold": load_ms, "warm": None, "covers": log.load_covers} if load_ms is not None else None,
        compile_ms=log.build_ms, **common)


def _export_times_result(source: IngestFile, data: list[Any], cell: CellOptions,
                         profiles_dir: Path | None) -> Result:
    """One cell from ``--exportTimes``: rbench's statistics over the per-query latencies, kept as samples."""
    try:
        times = parse_export_times(data)
    except TrtexecLogError as exc:
        raise RbenchError(f"{source.path.name}: {exc}") from None
    return _trtexec_cell_result(
        source, cell, profiles_dir, fmt="exportTimes", version=None, precision=None, status="ok",
        latency=summarize([times.latency_ms]).to_dict(), samples=[times.latency_ms],
        settings={"latency": _TIMES_METRIC, "gpu_compute_median_ms": statistics.median(times.compute_ms)})


def _chip(name: str) -> str:
    """A chipset name in one spelling: ``Snapdragon® 8 Gen 2`` and ``qualcomm-snapdragon-8gen2`` agree."""
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("qualcomm", ""))


def _published_model(perf: PerfYaml, cell: CellOptions, where: str) -> tuple[str, str, ModelSpec | None]:
    """The model the cells are stored under: ``--model``, else the file's own (``LaMa-Dilated`` → ``lama-dilated``);
    a network rbench does not build keeps that name, with variant ``published``."""
    names = sorted({entry.model for entry in perf.passed})
    name = cell.model or re.sub(r"[^a-z0-9]+", "-", names[0].lower()).strip("-")
    try:
        spec = get_model_spec(name)
    except UnknownNameError:
        if cell.variant:
            raise RbenchError(f"{where}: --variant is for rbench's own models; {name} is not one") from None
        return name, "published", None
    variant = cell.variant or spec.default_variant
    spec.variant_options(variant)
    return spec.name, variant, spec


def _perf_yaml_results(source: IngestFile, perf: PerfYaml, cell: CellOptions,
                       profiles_dir: Path | None) -> list[Result]:
    """The published QNN numbers of the profile's device: one cell per runtime and precision."""
    where = source.path.name
    if cell.device is None or cell.resolution is None:
        raise RbenchError(f"{where} is an ai-hub-models perf.yaml, which does not say the input size: pass "
                          "--device (a profile naming the AI Hub device) and --res (e.g. 512 for ai-hub-models' "
                          "inpainting models)")
    profile = get_profile(cell.device, profiles_dir)
    if profile.target != QNN_TARGET:
        raise RbenchError(f"{where} holds AI Hub numbers, but device {profile.name} runs {profile.target} artifacts")
    name, chipset = profile.connection.get("device_name"), profile.connection.get("chipset")
    entries = [entry for entry in perf.passed
               if entry.device == name or (chipset and entry.chipset and _chip(entry.chipset) == _chip(chipset))]
    if not entries:
        devices = ", ".join(sorted({entry.device for entry in perf.passed}))
        raise RbenchError(f"{where} has no passed entry for {profile.name} ({name or chipset}); it has: {devices}")
    model, variant, spec = _published_model(perf, cell, where)
    if spec is not None:
        spec.constraint.check(cell.resolution, cell.resolution)
    results = []
    for entry in entries:
        precision = _PUBLISHED_PRECISIONS.get(entry.precision or "")
        if entry.runtime not in QNN_RUNTIMES or precision is None or entry.inference_ms is None:
            continue
        placement = _published_placement(entry)
        results.append(Result(
            device=profile.name, runner="ingest", model=model,
            variant=entry.runtime if spec is None else variant, height=cell.resolution, width=cell.resolution,
            target=profile.target, precision=precision, status="ok", latency=_latency(median=entry.inference_ms),
            peak_memory_mb=entry.peak_memory_mib[1] if entry.peak_memory_mib else None,
            settings={"latency": _PERF_YAML_METRIC, "runtime": entry.runtime, "hosted": AIHUB_HOSTED,
                      "published_precision": entry.precision, "primary_compute_unit": entry.primary_compute_unit},
            environment={"device_reported": {"device": entry.device, "chipset": entry.chipset,
                                             "memory_mib": {"inference": entry.peak_memory_mib}} | placement},
            receipt={"job_id": entry.job_id, "tool_versions": entry.tool_versions},
            provenance={"source": "ingested", "tool": "ai-hub-models perf.yaml", "schema": perf.schema,
                        "job_id": entry.job_id, "qairt": entry.tool_versions.get("qairt"), "file": where,
                        "file_sha256": source.sha256}))
    if not results:
        runtimes = ", ".join(sorted({f"{e.runtime} {e.precision}" for e in entries}))
        raise RbenchError(f"{where}: no QNN entry at a precision rbench stores for {profile.name} (it has: "
                          f"{runtimes})")
    return results


def _published_placement(entry: PublishedPerf) -> dict[str, Any]:
    """The layer counts per compute unit, in the shape of a measured op placement (the gate compares them)."""
    layers = entry.layers
    if layers is None or layers.total is None:
        return {}
    counts = {"NPU": layers.npu or 0, "GPU": layers.gpu or 0, "CPU": layers.cpu or 0}
    counts["UNSPECIFIED"] = max(layers.total - sum(counts.values()), 0)
    placement = Placement({unit: UnitShare(n, 0.0) for unit, n in counts.items()}, layers.total,
                          entry.primary_compute_unit)  # published counts carry no per-layer times
    return {"placement": placement.to_dict(), "placement_text": describe_placement(placement)}


def ingest(path: Path, store: ResultStore, profiles_dir: Path | None = None,
           cell: CellOptions | None = None) -> list[Result]:
    """Detect the format, validate every row or the one trtexec cell, then store them all (a bad file stores
    nothing and names the file, the row and the field)."""
    source, cell = IngestFile.read(path), cell or CellOptions()
    kind, parsed = detect(source)
    if kind == "trtexec":
        results = [_log_result(source, parsed, cell, profiles_dir)]
    elif kind == "perf-yaml":
        results = _perf_yaml_results(source, parsed, cell, profiles_dir)
    elif kind == "export-times":
        results = [_export_times_result(source, parsed, cell, profiles_dir)]
    else:
        results = _row_results(source, *parsed, cell, profiles_dir)
    for result in results:
        store.add(result)
    return results
