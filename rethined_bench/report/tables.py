"""Tables built from the store with pandas, with the paper's numbers in their own, labelled columns."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..models import BENCH_RESOLUTIONS, get_model_spec
from ..store import Result

PAPER_DEVICE = "iPad Pro M2"


def model_label(result: Result) -> str:
    try:
        default = get_model_spec(result.model).default_variant
    except Exception:  # a model that is no longer registered still reports under its stored name
        default = result.variant
    return result.model if result.variant == default else f"{result.model} ({result.variant})"


def cell_text(result: Result | None, detailed: bool = False) -> str:
    """Median ms (with p90, CV and n when detailed); ``-`` plus the reason for failed/unsupported cells."""
    if result is None:
        return ""
    if result.status != "ok":
        return f"- ({result.status}: {_short(result.reason)})"
    latency = result.latency
    text = f"{latency['median']:.1f}"
    if detailed:
        text += f" (p90 {latency['p90']:.1f}, CV {latency['cv']:.1%}, n={latency['n']})"
    if latency.get("unstable"):
        text += " †"
    return text


def _short(reason: str | None, limit: int = 80) -> str:
    reason = (reason or "").replace("|", "/").replace("\n", " ")
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def _paper_number(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


def table3(results: list[Result], detailed: bool = False) -> pd.DataFrame:
    """Table 3 for one device: latency per resolution, work at 2048, params; the paper's row beside each model."""
    rows = []
    by_model: dict[str, dict[int, Result]] = {}
    for result in results:
        by_model.setdefault(model_label(result), {})[result.height] = result
    for label, cells in sorted(by_model.items()):
        any_result = next(iter(cells.values()))
        at_2048 = cells.get(2048)
        work = (at_2048.work if at_2048 else None) or {}
        params = next((r.work["params"] for r in cells.values() if r.work), None)
        paper = get_model_spec(any_result.model).paper_claims.get("table3", {})
        row = {"model": label}
        for res in BENCH_RESOLUTIONS:
            row[f"latency {res} (ms)"] = cell_text(cells.get(res), detailed)
        row["fvcore GMACs @2048"] = f"{work['fvcore_gmacs']:.2f}" if work.get("fvcore_gmacs") is not None else ""
        row["GFLOPs @2048"] = f"{work['gflops']:.1f}" if "gflops" in work else ""
        row["params (M)"] = f"{params / 1e6:.2f}" if params else ""
        row[f"paper: latency 1024 (ms, {PAPER_DEVICE})"] = _paper_number(paper.get("latency_1024"))
        row[f"paper: latency 2048 (ms, {PAPER_DEVICE})"] = _paper_number(paper.get("latency_2048"))
        row["paper: FLOPs @2048 (as printed)"] = _paper_number(paper.get("flops_at_2048"))
        row["paper: params (M)"] = _paper_number(paper.get("params"))
        rows.append(row)
    return pd.DataFrame(rows)


def load_table(results: list[Result]) -> pd.DataFrame:
    """Load time (cold, warm) and first inference per cell, with the peak memory of an inference."""
    rows = []
    for result in results:
        if result.status != "ok":
            continue
        rows.append({
            "model": model_label(result), "resolution": result.height,
            "load cold (ms)": f"{result.load['cold']:.1f}", "load warm (ms)": f"{result.load['warm']:.1f}",
            "first inference (ms)": f"{result.first_inference_ms:.1f}",
            "peak inference memory (MB)": f"{result.peak_memory_mb:.0f}",
        })
    return pd.DataFrame(rows)


def roofline_table(results: list[Result]) -> pd.DataFrame:
    """Measured median against the roofline floor of the device (efficiency = floor / measured)."""
    rows = []
    for result in results:
        if result.status != "ok" or not (result.roofline or {}).get("floor_ms"):
            continue
        floor = result.roofline["floor_ms"]
        median = result.latency["median"]
        rows.append({
            "model": model_label(result), "resolution": result.height, "median (ms)": f"{median:.1f}",
            "floor (ms)": f"{floor:.1f}", "bound": result.roofline["bound"],
            "measured / floor": f"{median / floor:.1f}x", "GFLOPs": f"{result.work['gflops']:.1f}",
            "MB moved": f"{result.work['bytes'] / 1e6:.0f}",
        })
    return pd.DataFrame(rows)
