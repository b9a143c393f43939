"""Tables built once, as data, from store Results with pandas; every output format renders these same frames.

A :class:`ReportTable` holds display strings under two-level columns ``(group, column)``: the group is a device,
"measured" or "paper" (empty for the row-label columns), so the paper's numbers always sit in their own, labelled
columns and the LaTeX/HTML renderers can draw the grouped header the paper uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..devices import DeviceProfile
from ..models import BENCH_RESOLUTIONS
from ..store import Result, resolution_label
from .paper import PAPER_DEVICE, paper_latency, paper_number, paper_table3, safe_spec, source_claims

TABLE2_RESOLUTION = 1024
REFERENCE_MODEL = "rethined"
Column = tuple[str, str]


@dataclass(frozen=True)
class ReportTable:
    """One table: a key (file/anchor name), a title, a caption saying what it shows, and its frame."""

    key: str
    title: str
    caption: str
    frame: pd.DataFrame

    @property
    def groups(self) -> list[tuple[str, int]]:
        """Consecutive column groups as (group, span), for grouped headers."""
        spans: list[tuple[str, int]] = []
        for group, _ in self.frame.columns:
            if spans and spans[-1][0] == group:
                spans[-1] = (group, spans[-1][1] + 1)
            else:
                spans.append((group, 1))
        return spans

    @property
    def flat_columns(self) -> list[str]:
        """One-line headers ("group: column") for formats without grouped headers (Markdown, CSV)."""
        return [f"{group}: {name}" if group else name for group, name in self.frame.columns]

    def rows(self) -> list[list[str]]:
        return [[str(value) for value in row] for row in self.frame.itertuples(index=False)]

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "caption": self.caption,
                "columns": [list(column) for column in self.frame.columns], "rows": self.rows()}


def _frame(columns: list[Column], rows: list[Mapping[Column, str]]) -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples(columns)
    return pd.DataFrame([[row.get(column, "") for column in columns] for row in rows], columns=index)


def model_label(result: Result) -> str:
    spec = safe_spec(result.model)
    default = spec.default_variant if spec else result.variant
    return result.model if result.variant == default else f"{result.model} ({result.variant})"


def cell_text(result: Result | None, detailed: bool = False) -> str:
    """Median ms (with p90, CV and n when detailed); ``-`` plus the reason for failed/unsupported cells."""
    if result is None:
        return ""
    if result.status != "ok":
        return f"- ({result.status}: {_short(result.reason)})"
    latency = result.latency or {}
    text = f"{latency['median']:.1f}"
    if detailed and latency.get("n"):
        text += f" (p90 {latency['p90']:.1f}, CV {latency['cv']:.1%}, n={latency['n']})"
    elif detailed:
        text += " (ingested median)"
    if latency.get("unstable"):
        text += " †"
    return text


def _short(reason: str | None, limit: int = 80) -> str:
    reason = (reason or "").replace("|", "/").replace("\n", " ")
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def _median(result: Result | None) -> float | None:
    return result.latency["median"] if result is not None and result.status == "ok" and result.latency else None


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}×" if numerator and denominator else ""


def _load_text(result: Result) -> str:
    """Cold load time in ms; ``-`` for a cell that did not run."""
    if result.status != "ok":
        return "-"
    return _number(result.load.get("cold")) if result.load else ""


def _by_model(results: Iterable[Result]) -> dict[str, dict[tuple[int, int], Result]]:
    """label → (height, width) → result."""
    cells: dict[str, dict[tuple[int, int], Result]] = {}
    for result in results:
        cells.setdefault(model_label(result), {})[(result.height, result.width)] = result
    return dict(sorted(cells.items()))


def table2(devices: Iterable[tuple[DeviceProfile, list[Result]]], detailed: bool = False) -> ReportTable:
    """Table 2: models × devices, latency and cold load time at 1024, the paper's numbers per device beside ours."""
    columns: list[Column] = [("", "model")]
    rows: dict[str, dict[Column, str]] = {}
    hosted = []
    for profile, results in devices:
        group = profile.name
        if any(hosted_note(r) for r in results):
            group, hosted = f"{profile.name} (hosted)", hosted + [profile.name]
        columns += [(group, "latency (ms)"), (group, "load (ms)")]
        if profile.paper_table2:  # devices the paper did not measure get no empty paper columns
            columns += [(group, "paper latency (ms)"), (group, "paper load (ms)")]
        at_1024 = [r for r in results if (r.height, r.width) == (TABLE2_RESOLUTION, TABLE2_RESOLUTION)]
        for label, cells in _by_model(at_1024).items():
            result = cells[(TABLE2_RESOLUTION, TABLE2_RESOLUTION)]
            row = rows.setdefault(label, {("", "model"): label})
            row[(group, "latency (ms)")] = cell_text(result, detailed)
            row[(group, "load (ms)")] = _load_text(result)
            if label == result.model:  # the paper measured the default variant only
                paper = profile.paper_table2.get(result.model, {})
                row[(group, "paper latency (ms)")] = paper_number(paper.get("latency"))
                row[(group, "paper load (ms)")] = paper_number(paper.get("load"))
    caption = (f"Latency (median ms; p90, CV and n in parentheses when detailed; † = unstable) and cold model load "
               f"time at {TABLE2_RESOLUTION}×{TABLE2_RESOLUTION} per device. *paper* columns are the RETHINED "
               "paper's Table 2 for that device, printed for reference only; \"-\" with a reason marks a cell that "
               "failed or is unsupported (the paper prints \"-\" for CoordFill on the Snapdragon 888).")
    if hosted:
        caption += (f" *(hosted)*: {', '.join(hosted)} measured on a service's shared devices, not on a device of "
                    "ours (see the device report's footer).")
    return ReportTable("table2", "Table 2: latency and load time per device", caption,
                       _frame(columns, [rows[label] for label in sorted(rows)]))


def latency_matrix(devices: Iterable[tuple[DeviceProfile, list[Result]]]) -> ReportTable:
    """rbench's cross-device layout: rows model × resolution, column groups backend → device → precision.

    Each measured cell reads "median ms (p90)"; the paper's latency for that device sits in its own column.
    """
    columns: list[Column] = [("", "model"), ("", "resolution")]
    rows: dict[tuple[str, tuple[int, int]], dict[Column, str]] = {}
    for profile, results in devices:
        group = f"{profile.target} → {profile.name} → {profile.precision}"
        columns.append((group, "median ms (p90)"))
        has_paper = any(paper_latency(profile, r.model, (r.height, r.width)) is not None for r in results)
        if has_paper:
            columns.append((group, "paper (ms)"))
        for label, by_res in _by_model(results).items():
            for res, result in by_res.items():
                row = rows.setdefault((label, res), {("", "model"): label, ("", "resolution"): resolution_label(*res)})
                row[(group, "median ms (p90)")] = _median_p90(result)
                if has_paper and label == result.model:
                    row[(group, "paper (ms)")] = paper_number(paper_latency(profile, result.model, res))
    caption = ("Median latency in ms with the p90 in parentheses (\"-\" with a reason: failed or unsupported), per "
               "backend → device → precision; *paper (ms)* is the RETHINED paper's latency for that device and "
               "resolution where it gives one.")
    return ReportTable("latency", "Latency by model, resolution and device", caption,
                       _frame(columns, [rows[key] for key in sorted(rows)]))


def _median_p90(result: Result) -> str:
    if result.status != "ok":
        return cell_text(result)
    mark = " †" if result.latency.get("unstable") else ""
    p90 = f" ({_number(result.latency.get('p90'))})" if result.latency.get("p90") is not None else ""
    return f"{result.latency['median']:.1f}{p90}{mark}"


def _number(value: float | None, digits: int = 1) -> str:
    """A measured number, or empty where a source (e.g. an ingested Xcode report) did not give it."""
    return "" if value is None else f"{value:.{digits}f}"


def _device_reported(result: Result) -> dict[str, Any]:
    return (result.environment or {}).get("device_reported") or {}


def hosted_note(result: Result) -> str | None:
    """Why a result is a hosted measurement (a service's shared device), from what its runner said; else None."""
    return (result.settings or {}).get("hosted") if result.status == "ok" else None


def device_table(profile: DeviceProfile, results: list[Result]) -> ReportTable:
    """An AI Hub-style table of one device's measured cells: chipset, runtime, time, memory, compute unit."""
    chipset = profile.toolchain.get("chip") or profile.connection.get("chipset") or ""
    configured = profile.toolchain.get("compute_units") or profile.toolchain.get("compute_unit") or ""
    columns: list[Column] = [("", "model"), ("", "resolution"), ("", "device"), ("", "chipset"),
                             ("", "target runtime"), ("", "precision"), ("", "inference time (ms)"),
                             ("", "peak memory (MB)"), ("", "compute units")]
    rows = [{
        ("", "model"): model_label(r), ("", "resolution"): r.resolution_label, ("", "device"): profile.display,
        ("", "chipset"): chipset, ("", "target runtime"): f"{r.target} ({r.runner})", ("", "precision"): r.precision,
        ("", "inference time (ms)"): cell_text(r),
        ("", "peak memory (MB)"): f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb is not None else "",
        ("", "compute units"): _device_reported(r).get("placement_text") or configured,
    } for r in results]
    caption = ("One row per cell in the layout of Qualcomm AI Hub's model cards (device, chipset, runtime, "
               "inference time, peak memory, precision, compute units: where the layers ran, as the device "
               "reported it, else what the profile asks for).")
    return ReportTable("device", "Device summary (AI Hub style)", caption, _frame(columns, rows))


def table3(results: list[Result], detailed: bool = False) -> ReportTable:
    """Table 3 for one device: latency per resolution, work at 2048, params; the paper's columns beside ours."""
    paper_group = f"paper ({PAPER_DEVICE})"
    columns: list[Column] = [("", "model")]
    columns += [("measured", f"latency {res} (ms)") for res in BENCH_RESOLUTIONS]
    columns += [("measured", "fvcore GMACs @2048"), ("measured", "GFLOPs @2048"), ("measured", "params (M)")]
    columns += [(paper_group, "latency 1024 (ms)"), (paper_group, "latency 2048 (ms)"),
                (paper_group, "FLOPs @2048 (as printed)"), (paper_group, "params (M)")]
    rows = []
    for label, cells in _by_model(results).items():
        any_result = next(iter(cells.values()))
        work = (cells[(2048, 2048)].work if (2048, 2048) in cells else None) or {}
        params = next((r.work["params"] for r in cells.values() if r.work and r.work.get("params")), None)
        row: dict[Column, str] = {("", "model"): label}
        for res in BENCH_RESOLUTIONS:
            row[("measured", f"latency {res} (ms)")] = cell_text(cells.get((res, res)), detailed)
        row[("measured", "fvcore GMACs @2048")] = f"{work['fvcore_gmacs']:.2f}" \
            if work.get("fvcore_gmacs") is not None else ""
        row[("measured", "GFLOPs @2048")] = f"{work['gflops']:.1f}" if work.get("gflops") is not None else ""
        row[("measured", "params (M)")] = f"{params / 1e6:.2f}" if params else ""
        paper = paper_table3(any_result.model) if label == any_result.model else {}
        row[(paper_group, "latency 1024 (ms)")] = paper_number(paper.get("latency_1024"))
        row[(paper_group, "latency 2048 (ms)")] = paper_number(paper.get("latency_2048"))
        row[(paper_group, "FLOPs @2048 (as printed)")] = paper_number(paper.get("flops_at_2048"))
        row[(paper_group, "params (M)")] = paper_number(paper.get("params"))
        rows.append(row)
    caption = ("Median latency in ms per cell (p90, CV and n in parentheses); † marks an unstable cell (see the JSON "
               f"for the reason). The *paper* columns are the RETHINED paper's Table 3, measured on an "
               f"**{PAPER_DEVICE}**, not on this device; they are printed for reference, never mixed with ours. "
               "*fvcore GMACs* count one multiply-add as one (fvcore's convention, the paper's \"FLOPs\"); *GFLOPs* "
               "count two per multiply-add and include attention (torch FlopCounterMode). The paper's FLOPs column is "
               "printed as it stands (labelled ×10⁶ in the paper; its magnitude suggests ×10⁹).")
    return ReportTable("table3", "Table 3: latency per resolution, work, parameters", caption, _frame(columns, rows))


def ratio_table(profile: DeviceProfile, results: list[Result]) -> ReportTable:
    """Each model against RETHINED at the same resolution, measured and in the paper, and measured against paper."""
    columns: list[Column] = [("", "model"), ("", "resolution"), ("measured", "median (ms)"),
                             ("measured", f"÷ {REFERENCE_MODEL}"), ("paper", "latency (ms)"),
                             ("paper", f"÷ {REFERENCE_MODEL}"), ("", "measured ÷ paper")]
    cells = _by_model(results)
    reference = cells.get(REFERENCE_MODEL, {})
    rows = []
    for label, by_res in cells.items():
        for res, result in sorted(by_res.items()):
            median = _median(result)
            default = label == result.model
            paper = paper_latency(profile, result.model, res) if default else None
            paper_ref = paper_latency(profile, REFERENCE_MODEL, res)
            rows.append({
                ("", "model"): label, ("", "resolution"): resolution_label(*res),
                ("measured", "median (ms)"): cell_text(result),
                ("measured", f"÷ {REFERENCE_MODEL}"): _ratio(median, _median(reference.get(res))),
                ("paper", "latency (ms)"): paper_number(paper),
                ("paper", f"÷ {REFERENCE_MODEL}"): _ratio(paper, paper_ref),
                ("", "measured ÷ paper"): _ratio(median, paper),
            })
    caption = (f"How many times slower than {REFERENCE_MODEL} (dense) each model is at the same resolution on this "
               "device (the paper's claim is that RETHINED is much faster than MI-GAN and CoordFill), next to the "
               "same ratio from the paper's numbers for this device (Table 2 at 1024; Tables 1/3 at 2048/4096 on the "
               f"{PAPER_DEVICE}), and our median against the paper's latency.")
    return ReportTable("ratios", "Ratios: against RETHINED and against the paper", caption, _frame(columns, rows))


def load_table(results: list[Result]) -> ReportTable:
    """Load time (cold, warm) and first inference per cell, with the peak memory of an inference; the caption says
    what the device's runner counts as load (from the settings stored with the results)."""
    columns: list[Column] = [("", "model"), ("", "resolution"), ("load", "cold (ms)"), ("load", "warm (ms)"),
                             ("", "first inference (ms)"), ("", "peak inference memory (MB)")]
    rows = [{
        ("", "model"): model_label(r), ("", "resolution"): r.resolution_label,
        ("load", "cold (ms)"): _number(r.load.get("cold")), ("load", "warm (ms)"): _number(r.load.get("warm")),
        ("", "first inference (ms)"): _number(r.first_inference_ms),
        ("", "peak inference memory (MB)"): _number(r.peak_memory_mb, 0),
    } for r in results if r.status == "ok" and r.load]
    described = next((r.settings for r in reversed(results) if r.status == "ok" and r.settings), {})
    memory = described.get("memory", "the RSS growth during inference above the loaded model, where the runner can "
                                     "measure it")
    caption = (f"Cold = {described.get('load_cold', 'the first load in a fresh process')}; warm = "
               f"{described.get('load_warm', 'a reload in the same process')}. Peak memory is {memory}.")
    return ReportTable("load", "Load time and memory", caption, _frame(columns, rows))


def roofline_table(profile: DeviceProfile, results: list[Result]) -> ReportTable:
    """Measured median against the device's roofline floor; efficiency = floor / measured."""
    columns: list[Column] = [("", "model"), ("", "resolution"), ("", "median (ms)"), ("roofline", "floor (ms)"),
                             ("roofline", "bound"), ("roofline", "measured / floor"), ("roofline", "efficiency"),
                             ("work", "GFLOPs"), ("work", "MB moved")]
    rows = []
    for r in results:
        if r.status != "ok" or not (r.roofline or {}).get("floor_ms"):
            continue
        floor, median = r.roofline["floor_ms"], r.latency["median"]
        rows.append({
            ("", "model"): model_label(r), ("", "resolution"): r.resolution_label, ("", "median (ms)"): f"{median:.1f}",
            ("roofline", "floor (ms)"): f"{floor:.1f}", ("roofline", "bound"): str(r.roofline.get("bound", "")),
            ("roofline", "measured / floor"): f"{median / floor:.1f}×",
            ("roofline", "efficiency"): f"{floor / median:.1%}",
            ("work", "GFLOPs"): f"{r.work['gflops']:.1f}", ("work", "MB moved"): f"{r.work['bytes'] / 1e6:.0f}",
        })
    source = ("measured at run time by the runner" if profile.ceilings.get("measure_at_runtime")
              else f"from the device profile: {profile.ceilings.get('source', 'no source given')}")
    caption = (f"Floor = max(GFLOPs / peak compute, bytes moved / memory bandwidth) with the device's ceilings "
               f"({source}); bytes are an estimate (weights read once, every activation written and read once). "
               "Efficiency = floor / measured.")
    return ReportTable("roofline", "Roofline", caption, _frame(columns, rows))


def source_papers_table(results: list[Result]) -> ReportTable | None:
    """The seed papers' own numbers for the models measured here (HiFill's Table 2, IN2's Table 9, WaveMix's
    throughput, LaMa's sizes), each beside our measurement at the same size; None when no measured model has any."""
    measured = {(r.model, r.variant) for r in results}
    rows = []
    for claim in source_claims():
        spec = safe_spec(claim.model)
        variant = claim.variant or spec.default_variant
        if (claim.model, variant) not in measured:
            continue
        cells = {(r.height, r.width): r for r in results if (r.model, r.variant) == (claim.model, variant)}
        ours = cells.get((claim.resolution, claim.resolution)) if claim.resolution else None
        params = next((r.work["params"] for r in cells.values() if r.work and r.work.get("params")), None)
        rows.append({
            ("", "model"): claim.model if variant == spec.default_variant else f"{claim.model} ({variant})",
            ("paper", "source"): claim.source, ("paper", "hardware"): claim.hardware,
            ("paper", "resolution"): str(claim.resolution or ""), ("paper", "as printed"): claim.printed,
            ("paper", "params (M)"): paper_number(claim.params_millions),
            ("measured", "latency at that resolution (ms)"): cell_text(ours),
            ("measured", "params (M)"): f"{params / 1e6:.2f}" if params else "",
        })
    if not rows:
        return None
    columns = list(rows[0])
    caption = ("The source papers' own numbers for these models, as printed, on the paper's hardware (not this "
               "device): reference points for scaling and size, never mixed with ours. *measured* is this device at "
               "the paper's resolution, where a cell was measured there (`rbench run --res`).")
    return ReportTable("source_papers", "The models' own papers", caption, _frame(columns, rows))
