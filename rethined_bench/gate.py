"""The latency regression gate (``rbench check``): fail CI only on a regression this machine can resolve.

Design (measurement.md §6, "rbench gate design"; DESIGN.md "The regression gate"):

* **A/B mode** (``--baseline A --candidate B``): A and B run interleaved (A B A B ...) in fresh processes on this
  machine; each process is summarised by its median (the process is the unit of replication, §3). A cell is a
  *regression* only if B is slower with a one-sided Mann-Whitney U p < ``alpha`` on process medians **and** the
  ratio of medians exceeds ``1 + threshold``. Flagged cells are measured again (confirm); a regression that does not
  reproduce becomes a warning.
* **Resolution** (``--calibrate A`` → A/A): the smallest slowdown this machine resolves is the 99th percentile of the
  bootstrap ratio of medians of an A/A run, minus 1. A regression whose ratio lies within that band is downgraded to a
  warning ("cannot resolve X% on this runner (A/A p99 = Y%)"). In A/B mode the band comes from ``--calibration FILE``
  (saved by ``--calibrate``) or, without one, from an implicit A/A: the bootstrap of the baseline's own process
  medians against themselves, which costs no extra runs.
* **Stored mode** (``--baseline-results baseline.json``): the store's latest results against a committed
  ``rbench report --format json``. Rule: fail if ``candidate median > baseline median × (1 + max(threshold, noise))``
  where ``noise = max(2 × baseline CV, spread of baseline process medians)``: the baseline's own recorded noise.
* **Failed and missing cells**: a baseline cell whose candidate failed (an export, build or worker that crashed; a
  ``failed`` row in the store) fails the gate, always. A baseline cell with no candidate at all (no artifact, no
  row, or a cell the model now declares ``unsupported``) fails too, unless ``--allow-missing``, which downgrades it
  to a warning. A broken build never passes by dropping out of the comparison.
* **Exact mode** (always, where both sides have the facts): params, fvcore GMACs, artifact size and the manifest's
  target-neutral ``graph`` (node count, node count by op type, weight bytes by dtype) for every target, and in
  stored mode the op placement a device reported (layers on GPU, CPU or no unit instead of the NPU). Any relative
  increase beyond ``structural_threshold`` (default 0) fails; noise cannot hide these.
"""

from __future__ import annotations

import atexit
import json
import socket
import tempfile
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .errors import RbenchError, read_json

DEFAULT_PROCESSES = 6  # one-sided Mann-Whitney needs n ≥ 5 per side for p < 0.01 (n=5: min p ≈ 0.004; n=6: 0.001)
BOOTSTRAP_RESAMPLES = 4000
CALIBRATION_SCHEMA = "rbench-calibration/1"
SUMMARY_SCHEMA = "rbench-gate/1"

CellKey = tuple[str, str, tuple[int, int], str, str]
Measure = Callable[[Any, Any], float]  # (Artifact, Protocol) -> one fresh process's median latency in ms

console = Console()


# ---------------------------------------------------------------------------------------------------------------
# Decision logic (pure: synthetic process medians in, verdict out)


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds: the minimum relative slowdown that matters and the significance required."""

    threshold: float = 0.10
    alpha: float = 0.01
    structural_threshold: float = 0.0
    seed: int = 0
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.structural_threshold < 0 or not 0 < self.alpha < 1:
            raise RbenchError("--threshold and --structural-threshold must be >= 0 and --alpha in (0, 1)")


FAILING = ("regression", "failed", "missing")


@dataclass
class Comparison:
    """One cell's verdict: pass, improvement, warning, regression, or ``failed`` / ``missing`` (no candidate
    timing to compare: it crashed, or it is not there), with the evidence."""

    cell: str
    baseline_ms: list[float]
    candidate_ms: list[float]
    ratio: float | None  # None when the candidate has no timing
    ci: tuple[float, float] | None  # None in stored mode (one number per side: no CI, no test)
    p_slower: float | None
    verdict: str
    note: str = ""
    band: float | None = None  # the resolvable slowdown the verdict used (A/A p99), when known

    @property
    def baseline_median(self) -> float | None:
        return float(np.median(self.baseline_ms)) if self.baseline_ms else None

    @property
    def candidate_median(self) -> float | None:
        return float(np.median(self.candidate_ms)) if self.candidate_ms else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"baseline_median_ms": self.baseline_median,
                               "candidate_median_ms": self.candidate_median}


def without_candidate(cell: str, baseline_ms: list[float], reason: str, config: GateConfig,
                      crashed: bool) -> Comparison:
    """The verdict for a baseline cell with no candidate timing: ``failed`` if the candidate crashed, else
    ``missing`` (a warning only with ``--allow-missing``)."""
    if crashed:
        return Comparison(cell, baseline_ms, [], None, None, None, "failed", f"candidate failed: {reason}")
    if config.allow_missing:
        return Comparison(cell, baseline_ms, [], None, None, None, "warning", f"{reason} (allowed by --allow-missing)")
    return Comparison(cell, baseline_ms, [], None, None, None, "missing", reason)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"baseline_median_ms": self.baseline_median,
                               "candidate_median_ms": self.candidate_median}


def bootstrap_ratios(baseline: Iterable[float], candidate: Iterable[float], seed: int,
                     resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """Bootstrap distribution of median(candidate) / median(baseline), each side resampled with replacement."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(list(baseline), float), np.asarray(list(candidate), float)
    med_a = np.median(a[rng.integers(0, a.size, (resamples, a.size))], axis=1)
    med_b = np.median(b[rng.integers(0, b.size, (resamples, b.size))], axis=1)
    return med_b / med_a


def ratio_ci(baseline: list[float], candidate: list[float], confidence: float, seed: int) -> tuple[float, float]:
    """Two-sided percentile bootstrap CI of the ratio of medians (seeded, so a report is reproducible)."""
    ratios = bootstrap_ratios(baseline, candidate, seed)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))


def resolvable_slowdown(baseline: list[float], candidate: list[float], seed: int) -> float:
    """A/A resolution: the 99th percentile of the bootstrap ratio of medians, minus 1 (0.08 = 8%)."""
    return max(float(np.percentile(bootstrap_ratios(baseline, candidate, seed), 99)) - 1, 0.0)


def self_resolvable(medians: list[float], seed: int) -> float:
    """Implicit A/A from one side's process medians: bootstrap them against themselves (no extra runs)."""
    return resolvable_slowdown(medians, medians, seed + 1)


def one_sided_p(baseline: list[float], candidate: list[float], alternative: str) -> float:
    """Mann-Whitney U p-value that the candidate's process medians are ``greater`` (or ``less``) than baseline's."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(candidate, baseline, alternative=alternative).pvalue)


def decide(cell: str, baseline: list[float], candidate: list[float], config: GateConfig,
           resolvable: float | None = None) -> Comparison:
    """The verdict for one cell from per-process medians (ms).

    regression: p(slower) < alpha and ratio > 1 + threshold, and the ratio is beyond the machine's resolvable band;
    warning: the same, but within the band (the runner cannot tell it from noise);
    improvement: p(faster) < alpha and ratio < 1 / (1 + threshold); pass otherwise.
    """
    if len(baseline) < 2 or len(candidate) < 2:
        raise RbenchError(f"{cell}: need at least 2 processes per side to compare")
    ratio = float(np.median(candidate) / np.median(baseline))
    ci = ratio_ci(baseline, candidate, 1 - config.alpha, config.seed)
    p_slower = one_sided_p(baseline, candidate, "greater")
    comparison = Comparison(cell, list(baseline), list(candidate), ratio, ci, p_slower, "pass", band=resolvable)
    if p_slower < config.alpha and ratio > 1 + config.threshold:
        comparison.verdict = "regression"
        if resolvable is not None and ratio - 1 <= resolvable:
            comparison.verdict = "warning"
            comparison.note = (f"cannot resolve {config.threshold:.0%} on this runner (A/A p99 = {resolvable:.1%}); "
                               f"observed +{ratio - 1:.1%}")
    elif one_sided_p(baseline, candidate, "less") < config.alpha and ratio < 1 / (1 + config.threshold):
        comparison.verdict = "improvement"
    return comparison


# ---------------------------------------------------------------------------------------------------------------
# Exact mode


@dataclass(frozen=True)
class StructuralDiff:
    """One deterministic fact that changed between baseline and candidate."""

    cell: str
    metric: str
    baseline: float
    candidate: float
    failed: bool

    def describe(self) -> str:
        return f"{self.metric}: {_fmt(self.baseline)} → {_fmt(self.candidate)}"


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def structural_facts(manifest: dict[str, Any]) -> dict[str, float]:
    """Deterministic facts of an artifact manifest (or a stored record): params, GMACs, size, and the graph's node
    counts (total and by op type) and weight bytes by dtype, whatever the target; for a record whose device reported
    its op placement (AI Hub), the layers on each compute unit other than the NPU."""
    work = manifest.get("work") or {}
    facts: dict[str, float] = {}
    params = work.get("params", manifest.get("params"))
    if isinstance(params, dict):
        params = params.get("deploy")
    if params is not None:
        facts["params"] = float(params)
    gmacs = work.get("fvcore_gmacs", manifest.get("fvcore_gmacs"))
    if gmacs is not None:
        facts["fvcore GMACs"] = float(gmacs)
    if manifest.get("size_bytes") is not None:
        facts["size bytes"] = float(manifest["size_bytes"])
    graph = manifest.get("graph") or manifest.get("onnx") or {}  # "onnx": manifests of rbench before graph
    if graph.get("node_count") is not None:
        facts["nodes"] = float(graph["node_count"])
    for op, count in (graph.get("ops") or {}).items():
        facts[op] = float(count)
    for dtype, size in (graph.get("weight_bytes") or {}).items():
        facts[f"{dtype} weight bytes"] = float(size)
    placement = ((manifest.get("environment") or {}).get("device_reported") or {}).get("placement") or {}
    for unit, share in (placement.get("units") or {}).items():
        if unit != "NPU":  # layers that fell off the NPU raise these: a regression no timing noise can hide
            facts[f"layers on {unit}"] = float(share["layers"])
    return facts


def structural_diffs(cell: str, baseline: dict[str, float], candidate: dict[str, float],
                     threshold: float) -> list[StructuralDiff]:
    """Every changed fact both sides can have; an increase beyond ``threshold`` (relative) fails.

    Op types and weight dtypes present on one side only count as 0 on the other (a new op type is an increase from
    0). Facts absent on either side as a whole (e.g. a stored record has no graph) are skipped.
    """
    ops_both = "nodes" in baseline and "nodes" in candidate
    scalar = {"params", "fvcore GMACs", "size bytes", "nodes"}
    names = [n for n in sorted(set(baseline) | set(candidate), key=lambda n: (n not in scalar, n))
             if (n in baseline and n in candidate) or (n not in scalar and ops_both)]
    diffs = []
    for name in names:
        old, new = baseline.get(name, 0.0), candidate.get(name, 0.0)
        if old != new:
            diffs.append(StructuralDiff(cell, name, old, new, new > old * (1 + threshold)))
    return diffs


# ---------------------------------------------------------------------------------------------------------------
# Artifacts: matching and measuring


@dataclass
class Pair:
    """A baseline and a candidate artifact for the same cell (model, variant, resolution, target, precision)."""

    label: str
    baseline: Any
    candidate: Any


def cell_key(manifest: dict[str, Any]) -> CellKey:
    height, width = manifest["resolution"]
    return (manifest["model"], manifest["variant"], (int(height), int(width)), manifest["target"],
            manifest["precision"])


def cell_label(key: CellKey) -> str:
    model, variant, (height, width), target, precision = key
    return f"{model}/{variant} {height}x{width} {target}-{precision}"


def load_artifacts(path: Path) -> dict[CellKey, Any]:
    """An artifact file, or every artifact with a manifest in a directory, keyed by its cell."""
    from .artifact import Artifact

    if not path.exists():
        raise RbenchError(f"no artifact or directory at {path}")
    directory = path.is_dir() and path.suffix != ".mlpackage"  # a package is one artifact, not a folder of them
    manifests = sorted(m for m in path.glob("*.json") if m.with_suffix("").exists()) if directory else [path]
    found: dict[CellKey, Any] = {}
    for manifest in manifests:
        artifact = _adopted(manifest) if _is_plain(manifest) else Artifact.load(manifest)
        key = cell_key(artifact.manifest)
        if key in found:
            raise RbenchError(f"{path} holds two artifacts for {cell_label(key)}: {found[key].path.name} and "
                              f"{artifact.path.name}")
        found[key] = artifact
    if not found:
        raise RbenchError(f"{path} holds no artifacts with manifests")
    return found


def _is_plain(path: Path) -> bool:
    """A file rbench did not export: an ONNX file or a Core ML package without a manifest beside it."""
    from .artifact import manifest_path_for

    is_model = (path.is_file() and path.suffix == ".onnx") or (path.is_dir() and path.suffix == ".mlpackage")
    return is_model and not manifest_path_for(path).is_file()


@cache
def _adoption_dir() -> Path:
    """Where this process adopts plain files for the gate (removed at exit; the gate stores nothing)."""
    directory = tempfile.TemporaryDirectory(prefix="rbench-check-")
    atexit.register(directory.cleanup)
    return Path(directory.name)


def _adopted(path: Path) -> Any:
    """A plain ONNX file or Core ML package as an artifact (:func:`rethined_bench.plain.adopt`): timed where its
    format runs (ONNX Runtime here; Core ML on a Mac), and compared exactly on what the file shows (op counts,
    weight bytes, size, parameters)."""
    from .plain import adopt

    return adopt(path, _adoption_dir())


def match_artifacts(baseline: Path, candidate: Path) -> tuple[list[Pair], list[Any]]:
    """Pair artifacts by manifest cell; two single files pair even when their cells differ (renamed model).

    Returns the pairs and the baseline artifacts that have no candidate (the gate fails on them).
    """
    base, cand = load_artifacts(baseline), load_artifacts(candidate)
    if baseline.is_file() and candidate.is_file():
        (key, a), (_, b) = next(iter(base.items())), next(iter(cand.items()))
        return [Pair(cell_label(key), a, b)], []
    common = sorted(set(base) & set(cand))
    if not common:
        raise RbenchError(f"no cell is in both {baseline} and {candidate} (matched by model, variant, resolution, "
                          "target and precision)")
    unmatched = [base[key] for key in sorted(set(base) - set(cand))]
    return [Pair(cell_label(key), base[key], cand[key]) for key in common], unmatched


class CandidateFailed(Exception):
    """The candidate could not be measured (its worker crashed or timed out): a failed cell, not a user error."""


def measure_in_worker(artifact: Any, protocol: Any) -> float:
    """One fresh process on the local runner of the artifact's target; returns its median timed latency in ms.

    Raises :class:`rethined_bench.runners.local.CellError` when the process fails.
    """
    from . import backends

    target = artifact.manifest["target"]
    runner = backends.local_runner(target)
    if runner is None:
        raise RbenchError(f"no local runner for target {target}; the gate runs artifacts on this machine")
    availability = runner.availability()
    if not availability.ok:
        raise RbenchError(f"{artifact.path.name}: {runner.name} cannot run here: {availability.reason}")
    measurement = runner.measure(runner.prepare(artifact), replace(protocol, processes=1))
    return float(np.median(measurement.processes[0].samples_ms))


def interleave(baseline: Any, candidate: Any, processes: int, protocol: Any,
               measure: Measure) -> tuple[list[float], list[float]]:
    """A B A B ... in fresh processes: drift and co-tenant load hit both sides alike.

    A baseline that cannot be measured is a user error (nothing to compare against); a candidate that cannot be
    measured raises :class:`CandidateFailed`.
    """
    from .runners.local import CellError

    a, b = [], []
    for _ in range(processes):
        try:
            a.append(measure(baseline, protocol))
        except CellError as exc:
            raise RbenchError(f"the baseline {baseline.path.name} cannot be measured: {exc}") from exc
        try:
            b.append(measure(candidate, protocol))
        except CellError as exc:
            raise CandidateFailed(f"{candidate.path.name}: {exc}") from exc
    return a, b


def compare_pair(pair: Pair, config: GateConfig, processes: int, protocol: Any, measure: Measure,
                 resolvable: float | None, confirm: bool = True) -> Comparison:
    """Measure one pair interleaved and decide; a flagged regression is measured again and must reproduce.

    The resolvable band is ``resolvable`` (a saved calibration) or, without one, the implicit A/A of each
    measurement's baseline process medians.
    """
    def measured() -> Comparison:
        a, b = interleave(pair.baseline, pair.candidate, processes, protocol, measure)
        band = resolvable if resolvable is not None else self_resolvable(a, config.seed)
        return decide(pair.label, a, b, config, band)

    try:
        comparison = measured()
    except CandidateFailed as exc:
        return without_candidate(pair.label, [], str(exc), config, crashed=True)
    if comparison.verdict != "regression" or not confirm:
        return comparison
    try:
        again = measured()
    except CandidateFailed as exc:
        return without_candidate(pair.label, comparison.baseline_ms, str(exc), config, crashed=True)
    if again.verdict == "regression":
        again.note = f"confirmed (first run +{comparison.ratio - 1:.1%}, p={comparison.p_slower:.3g})"
        return again
    comparison.verdict = "warning"
    comparison.note = f"did not reproduce on confirm (re-run +{again.ratio - 1:.1%}, p={again.p_slower:.3g})"
    return comparison


@dataclass
class Calibration:
    """An A/A run's verdict on this machine: the smallest slowdown it can resolve."""

    artifact: str
    sha256: str
    processes: int
    baseline_ms: list[float]
    candidate_ms: list[float]
    resolvable: float
    host: str = field(default_factory=socket.gethostname)
    schema: str = CALIBRATION_SCHEMA

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        data = read_json(path, missing=f"no calibration file at {path}; create one with rbench check --calibrate "
                                       "ARTIFACT")
        if data.get("schema") != CALIBRATION_SCHEMA:
            raise RbenchError(f"{path} is not an rbench calibration ({CALIBRATION_SCHEMA})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise RbenchError(f"{path} is a malformed calibration ({exc}); re-run rbench check --calibrate") from exc


def calibrate(artifact: Any, processes: int, protocol: Any, measure: Measure, seed: int = 0) -> Calibration:
    """Run A against itself, interleaved, and derive the resolvable slowdown from the A/A ratio's bootstrap."""
    a, b = interleave(artifact, artifact, processes, protocol, measure)
    return Calibration(str(artifact.path), artifact.sha256, processes, a, b, resolvable_slowdown(a, b, seed))


# ---------------------------------------------------------------------------------------------------------------
# Stored mode


def load_baseline_records(path: Path) -> dict[CellKey, dict[str, Any]]:
    """Successful records of a committed ``rbench report --format json``, keyed by cell."""
    data = read_json(path, missing=f"no baseline results file at {path}; write one with rbench report --format json")
    if not isinstance(data, dict) or data.get("schema") != "rbench-results/1":
        raise RbenchError(f"{path} is not an rbench-results/1 report (rbench report --format json)")
    return {cell_key(r): r for r in data["results"] if r.get("status") == "ok" and r.get("latency_ms")}


def baseline_noise(latency: dict[str, Any]) -> float:
    """Relative noise a baseline record showed: max(2 × CV, spread of its process medians around their median)."""
    noise = 2 * float(latency.get("cv") or 0.0)
    medians = latency.get("process_medians") or []
    centre = latency.get("median_of_process_medians") or latency["median"]
    if len(medians) > 1:
        noise = max(noise, (max(medians) - min(medians)) / centre)
    return noise


def stored_verdict(cell: str, baseline: dict[str, Any], candidate: dict[str, Any], config: GateConfig) -> Comparison:
    """Candidate record against baseline record: regression beyond max(threshold, baseline noise)."""
    base, cand = baseline["latency_ms"], candidate["latency_ms"]
    noise = baseline_noise(base)
    limit = 1 + max(config.threshold, noise)
    ratio = cand["median"] / base["median"]
    verdict, note = "pass", f"limit ×{limit:.3f} (noise {noise:.1%})"
    if ratio > limit:
        verdict = "regression"
    elif ratio > 1 + config.threshold:
        verdict, note = "warning", f"cannot resolve {config.threshold:.0%}: baseline noise {noise:.1%}"
    elif ratio < 1 / limit:
        verdict = "improvement"
    return Comparison(cell, [base["median"]], [cand["median"]], ratio, None, None, verdict, note, noise)


def stored_check(baseline_path: Path, db: Path, device: str, config: GateConfig
                 ) -> tuple[list[Comparison], list[StructuralDiff]]:
    """Compare the store's latest results for ``device`` with a committed baseline report."""
    from .store import ResultStore

    baseline = load_baseline_records(baseline_path)
    if not db.is_file():
        raise RbenchError(f"no results database at {db}; run `rbench run` first")
    latest = {cell_key(r): r for r in (res.to_public() for res in ResultStore(db).latest(device))}
    if not set(baseline) & set(latest):
        raise RbenchError(f"no cell of {baseline_path} has a result for device {device} in {db}")
    comparisons, diffs = [], []
    for key in sorted(baseline):
        label, current = cell_label(key), latest.get(key)
        if current is None or current["status"] != "ok" or not current.get("latency_ms"):
            comparisons.append(_stored_without_candidate(label, baseline[key], current, db, config))
            continue
        comparisons.append(stored_verdict(label, baseline[key], current, config))
        diffs += structural_diffs(label, structural_facts(baseline[key]), structural_facts(current),
                                  config.structural_threshold)
    return comparisons, diffs


def _stored_without_candidate(label: str, baseline: dict[str, Any], current: dict[str, Any] | None, db: Path,
                              config: GateConfig) -> Comparison:
    base_ms = [baseline["latency_ms"]["median"]]
    if current is None:
        return without_candidate(label, base_ms, f"no result for this cell in {db}", config, crashed=False)
    if current["status"] == "failed":
        return without_candidate(label, base_ms, current.get("reason") or "no reason stored", config, crashed=True)
    return without_candidate(label, base_ms, f"the candidate is {current['status']}: {current.get('reason')}",
                             config, crashed=False)


# ---------------------------------------------------------------------------------------------------------------
# Output


def failed(comparisons: list[Comparison], diffs: list[StructuralDiff]) -> bool:
    return any(c.verdict in FAILING for c in comparisons) or any(d.failed for d in diffs)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def print_results(comparisons: list[Comparison], diffs: list[StructuralDiff], config: GateConfig) -> None:
    """A rich table per cell (latency; band = the resolvable slowdown or stored noise used) and structural diffs."""
    colours = {"pass": "green", "improvement": "cyan", "warning": "yellow", "regression": "red", "failed": "red",
               "missing": "red"}
    for c in comparisons:
        table = Table("base ms", "cand ms", f"ratio [{1 - config.alpha:.0%} CI]", "p slower", "band", "verdict",
                      title=c.cell)
        table.add_row(_ms(c.baseline_median), _ms(c.candidate_median),
                      ("—" if c.ratio is None else f"{c.ratio:.3f}") + (f" [{c.ci[0]:.3f}, {c.ci[1]:.3f}]" if c.ci
                                                                       else ""),
                      "" if c.p_slower is None else f"{c.p_slower:.3g}", "" if c.band is None else f"{c.band:.1%}",
                      f"[{colours[c.verdict]}]{c.verdict}[/]")
        console.print(table)
        if c.note:
            console.print(f"  {c.note}", highlight=False)
    for d in diffs:
        colour = "red" if d.failed else "dim"
        console.print(f"[{colour}]{'FAIL' if d.failed else 'info'}[/] {d.cell}: {d.describe()}", highlight=False)


def summary(mode: str, comparisons: list[Comparison], diffs: list[StructuralDiff], config: GateConfig,
            resolvable: float | None) -> dict[str, Any]:
    return {"schema": SUMMARY_SCHEMA, "mode": mode, "passed": not failed(comparisons, diffs),
            "config": asdict(config), "resolvable": resolvable,
            "cells": [c.to_dict() for c in comparisons], "structural": [asdict(d) for d in diffs]}


def markdown_summary(data: dict[str, Any]) -> str:
    """A pull-request comment: verdict, one row per cell, structural diffs."""
    icon = {"pass": "✅", "improvement": "🚀", "warning": "⚠️", "regression": "❌", "failed": "💥", "missing": "❓"}
    lines = [f"### rbench latency gate: {'passed' if data['passed'] else 'FAILED'}", "",
             f"threshold {data['config']['threshold']:.0%}, alpha {data['config']['alpha']}, mode {data['mode']}", "",
             "| cell | baseline ms | candidate ms | ratio | CI | p | verdict | note |",
             "|---|---|---|---|---|---|---|---|"]
    for c in data["cells"]:
        p = "" if c["p_slower"] is None else f"{c['p_slower']:.3g}"
        ci = "" if c["ci"] is None else f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]"
        ratio = "" if c["ratio"] is None else f"{c['ratio']:.3f}"
        lines.append(f"| {c['cell']} | {_ms(c['baseline_median_ms'])} | {_ms(c['candidate_median_ms'])} | "
                     f"{ratio} | {ci} | {p} | {icon[c['verdict']]} {c['verdict']} | {c['note']} |")
    if data["structural"]:
        lines += ["", "**Structural changes** (exact, noise-free):", ""]
        lines += [f"- {'❌' if d['failed'] else 'ℹ️'} {d['cell']}: {d['metric']}: {_fmt(d['baseline'])} → "
                  f"{_fmt(d['candidate'])}" for d in data["structural"]]
    return "\n".join(lines) + "\n"


def write_summaries(data: dict[str, Any], json_path: Path | None, markdown_path: Path | None) -> None:
    for path, text in ((json_path, json.dumps(data, indent=2) + "\n"),
                       (markdown_path, markdown_summary(data))):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


# ---------------------------------------------------------------------------------------------------------------
# Command


def ab_check(baseline: Path, candidate: Path, config: GateConfig, processes: int, protocol: Any,
             measure: Measure = measure_in_worker, calibration: Calibration | None = None,
             confirm: bool = True) -> tuple[list[Comparison], list[StructuralDiff]]:
    """A/B mode over every matched cell: latency (interleaved, confirmed) and exact structural diffs; a baseline
    cell the candidate directory lacks is ``missing``."""
    pairs, unmatched = match_artifacts(baseline, candidate)
    resolvable = calibration.resolvable if calibration else None
    comparisons = [without_candidate(cell_label(cell_key(a.manifest)), [], f"no candidate artifact in {candidate}",
                                     config, crashed=False) for a in unmatched]
    diffs = []
    for pair in pairs:
        diffs += structural_diffs(pair.label, structural_facts(pair.baseline.manifest),
                                  structural_facts(pair.candidate.manifest), config.structural_threshold)
        comparisons.append(compare_pair(pair, config, processes, protocol, measure, resolvable, confirm))
    return comparisons, diffs


def _protocol(warmup: int, min_iters: int, min_time: float, max_time: float) -> Any:
    from .measure.protocol import Protocol

    try:
        return Protocol(processes=1, warmup=warmup, min_iters=min_iters, min_time_s=min_time, max_time_s=max_time)
    except ValueError as exc:
        raise RbenchError(str(exc)) from exc


def run_calibration(artifact_path: Path, processes: int, protocol: Any, out: Path | None, seed: int,
                    measure: Measure = measure_in_worker) -> Calibration:
    """``--calibrate``: A/A on one artifact, printed and (with ``out``) saved for ``--calibration`` in A/B mode."""
    artifact = next(iter(load_artifacts(artifact_path).values()))
    result = calibrate(artifact, processes, protocol, measure, seed)
    console.print(f"A/A on {socket.gethostname()}: {processes} processes per side, ratio of medians "
                  f"{np.median(result.candidate_ms) / np.median(result.baseline_ms):.3f}; smallest resolvable "
                  f"slowdown (A/A p99) = {result.resolvable:.1%}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(asdict(result), indent=2) + "\n")
        console.print(f"wrote {out}")
    return result


def check(
    baseline: Annotated[Optional[Path], typer.Option(help="Baseline artifact or directory of artifacts (A/B).")] = None,
    candidate: Annotated[Optional[Path], typer.Option(help="Candidate artifact or directory (A/B).")] = None,
    baseline_results: Annotated[Optional[Path], typer.Option(help="Committed `rbench report --format json` "
                                                             "to compare the store's latest results with.")] = None,
    calibrate_artifact: Annotated[Optional[Path], typer.Option("--calibrate", help="Run this artifact A/A and "
                                  "report the smallest slowdown this machine resolves (saved with --calibration).")
                                  ] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration JSON: written by --calibrate, read in A/B "
                           "mode (default: an implicit A/A from the baseline's own process medians).")] = None,
    threshold: Annotated[float, typer.Option(help="Minimum slowdown that fails (0.10 = 10%).")] = 0.10,
    alpha: Annotated[float, typer.Option(help="Significance of the one-sided Mann-Whitney U test.")] = 0.01,
    structural_threshold: Annotated[float, typer.Option(help="Allowed relative increase of params, GMACs, node "
                                    "counts per op type, artifact size (0 = any increase fails).")] = 0.0,
    allow_missing: Annotated[bool, typer.Option(help="Warn instead of failing on a baseline cell the candidate "
                             "lacks (removed on purpose). A candidate that failed always fails.")] = False,
    processes: Annotated[int, typer.Option(help="Fresh processes per side (default 6: with alpha 0.01 a one-sided "
                         "Mann-Whitney on process medians needs >= 5 per side; 6 gives min p = 0.001).")
                         ] = DEFAULT_PROCESSES,
    warmup: Annotated[int, typer.Option(help="Warm-up iterations per process.")] = 1,
    min_iters: Annotated[int, typer.Option(help="Minimum timed iterations per process.")] = 5,
    min_time: Annotated[float, typer.Option(help="Minimum timed seconds per process.")] = 0.5,
    max_time: Annotated[float, typer.Option(help="Cap on timed seconds per process.")] = 30.0,
    confirm: Annotated[bool, typer.Option(help="Re-run flagged cells once; fail only if it reproduces.")] = True,
    db: Annotated[Path, typer.Option("--db", help="Results database (stored mode).")] = Path("results/rbench.sqlite"),
    device: Annotated[str, typer.Option(help="Device whose latest results are checked (stored mode).")] = "host-cpu",
    summary_json: Annotated[Optional[Path], typer.Option(help="Write a machine-readable summary here.")] = None,
    summary_markdown: Annotated[Optional[Path], typer.Option(help="Write a pull-request comment here.")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Latency regression gate: exit 1 on a regression this machine can resolve, 0 otherwise, 2 on user error.

    A/B (--baseline, --candidate) runs both interleaved in fresh processes; stored mode (--baseline-results) checks
    the store's latest results; --calibrate runs A/A. Structural facts are always compared exactly. See docs/ci.md.
    """
    config = GateConfig(threshold, alpha, structural_threshold, seed, allow_missing)
    if processes < 2:
        raise RbenchError("--processes must be >= 2")
    if calibrate_artifact is not None:
        run_calibration(calibrate_artifact, processes, _protocol(warmup, min_iters, min_time, max_time),
                         calibration, seed)
        return
    if baseline_results is not None:
        comparisons, diffs = stored_check(baseline_results, db, device, config)
        mode, resolvable = "stored", None
    elif baseline is not None and candidate is not None:
        calib = Calibration.load(calibration) if calibration else None
        comparisons, diffs = ab_check(baseline, candidate, config, processes,
                                      _protocol(warmup, min_iters, min_time, max_time), calibration=calib,
                                      confirm=confirm)
        mode, resolvable = "ab", calib.resolvable if calib else None
    else:
        raise RbenchError("give --baseline and --candidate (A/B), --baseline-results (stored) or --calibrate")
    print_results(comparisons, diffs, config)
    data = summary(mode, comparisons, diffs, config, resolvable)
    write_summaries(data, summary_json, summary_markdown)
    console.print("[red]FAILED[/]" if not data["passed"] else "[green]passed[/]")
    if not data["passed"]:
        raise typer.Exit(1)
