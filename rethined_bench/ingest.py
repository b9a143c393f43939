"""``rbench ingest``: numbers measured where rbench cannot drive the device, stored as results with provenance.

The typical source is Xcode's Core ML performance report on an iPhone (median prediction and load time per compute
unit). The file format is documented in ``docs/ingest.md``: a CSV with one row per cell, or a JSON object with a
``results`` list of the same fields. Ingested rows carry ``provenance.source = "ingested"`` and the tool that
produced them, so reports can tell them from numbers rbench measured itself.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .devices import DeviceProfile, get_profile
from .errors import RbenchError, read_json
from .models import get_model_spec
from .store import Result, ResultStore

REQUIRED = ("model", "resolution", "latency_median_ms")
OPTIONAL = ("device", "variant", "compute_units", "load_ms", "load_warm_ms", "first_inference_ms", "precision",
            "source", "measured_at", "notes")


def read_rows(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and file-level defaults from a CSV or JSON file (the JSON object's other keys are defaults)."""
    if not path.is_file():
        raise RbenchError(f"ingest file not found: {path}")
    if path.suffix.lower() == ".json":
        data = read_json(path, missing=f"ingest file not found: {path}")
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise RbenchError(f"{path}: expected an object with a 'results' list (see docs/ingest.md)")
        return data["results"], {k: v for k, v in data.items() if k != "results"}
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            return [dict(row) for row in csv.DictReader(handle)], {}
    raise RbenchError(f"{path}: ingest reads .csv or .json files")


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
    profile: DeviceProfile = get_profile(str(row["device"]), profiles_dir)
    spec = get_model_spec(str(row["model"]))
    variant = str(row.get("variant") or spec.default_variant)
    spec.variant_options(variant)
    resolution = int(float(row["resolution"]))
    spec.constraint.check(resolution, resolution)
    median = _number(row, "latency_median_ms", where, required=True)
    load = {"cold": _number(row, "load_ms", where), "warm": _number(row, "load_warm_ms", where)}
    compute_units = row.get("compute_units") or profile.toolchain.get("compute_units")
    return Result(
        device=profile.name, runner="ingest", model=spec.name, variant=variant, height=resolution,
        width=resolution, target=profile.target, precision=str(row.get("precision") or profile.precision),
        status="ok",
        latency={"median": median, "min": None, "max": None, "p90": None, "p99": None, "mean": None, "std": None,
                 "cv": None, "n": None, "processes": None, "median_of_process_medians": None, "unstable": False,
                 "reasons": []},
        load=load if any(v is not None for v in load.values()) else None,
        first_inference_ms=_number(row, "first_inference_ms", where),
        settings={"compute_units": compute_units},
        provenance={"source": "ingested", "tool": row.get("source", "unspecified"),
                    "measured_at": row.get("measured_at"), "notes": row.get("notes"), "file": where.split(":")[0]},
    )


def ingest(path: Path, store: ResultStore, profiles_dir: Path | None = None) -> list[Result]:
    """Validate every row first, then store them all; a bad row stores nothing and names the file and row."""
    rows, defaults = read_rows(path)
    if not rows:
        raise RbenchError(f"{path}: no rows to ingest")
    results = [to_result(row, defaults, f"{path.name}: row {i}", profiles_dir) for i, row in enumerate(rows, 1)]
    for result in results:
        store.add(result)
    return results
