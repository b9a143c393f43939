"""Output formats of ``rbench report``: markdown (the committed report), JSON and CSV (the documented schema)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..devices import DeviceProfile
from ..store import Result, iter_public
from .tables import PAPER_DEVICE, load_table, roofline_table, table3

FORMATS = ("markdown", "json", "csv")


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_no measured cells_\n"
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def settings_footer(results: list[Result]) -> str:
    """Protocol, runner settings, host, versions, date and rbench git sha of the cells in the table."""
    measured = [r for r in results if r.status == "ok"]
    if not measured:
        return ""
    newest = max(measured, key=lambda r: r.created_at)
    env, protocol, settings = newest.environment or {}, newest.protocol or {}, newest.settings or {}
    host = env.get("host", {})
    versions = ", ".join(f"{k} {v}" for k, v in sorted(env.get("versions", {}).items()))
    lines = [
        "**Settings.** "
        f"Protocol: {protocol.get('processes')} fresh processes × ({protocol.get('warmup')} warm-up + timed "
        f"iterations until ≥{protocol.get('min_iters')} and ≥{protocol.get('min_time_s')} s, capped at "
        f"{protocol.get('max_time_s')} s); latency = median of all timed iterations, batch 1, fixed shapes, "
        "inputs in host memory (copies included).",
        "Runner: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())) + ".",
        f"Host: {host.get('cpu')}, {host.get('usable_cores')} cores, {host.get('memory_gib')} GiB, {host.get('os')}.",
        f"Versions: {versions}.",
        f"rbench {env.get('rbench', {}).get('version')} (git {env.get('rbench', {}).get('git')}); "
        f"measured {min(r.created_at for r in measured)} to {newest.created_at}.",
    ]
    return "\n\n".join(lines) + "\n"


def markdown_report(profile: DeviceProfile, results: list[Result]) -> str:
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        f"# rbench report: {profile.display} (`{profile.name}`)\n",
        f"Target `{profile.target}` {profile.precision}, runner `{profile.runner}`. Generated {generated} by "
        "`rbench report`.\n",
        "## Table 3: latency per resolution, work, parameters\n",
        "Median latency in ms per cell (p90, CV and n in parentheses); † marks an unstable cell (see the JSON for "
        f"the reason). The *paper* columns are the RETHINED paper's Table 3, measured on an **{PAPER_DEVICE}**, not "
        "on this device; they are printed for reference, never mixed with ours. *fvcore GMACs* count one "
        "multiply-add as one (fvcore's convention, the paper's \"FLOPs\"); *GFLOPs* count two per multiply-add and "
        "include attention (torch FlopCounterMode). The paper's FLOPs column is printed as it stands (labelled "
        "×10⁶ in the paper; its magnitude suggests ×10⁹).\n",
        _markdown_table(table3(results, detailed=True)),
        "\n## Load time and memory\n",
        "Cold = `InferenceSession()` in a fresh process (file read and graph optimisation included); warm = a "
        "reload in the same process. Peak memory is the RSS growth during inference above the loaded model.\n",
        _markdown_table(load_table(results)),
        "\n## Roofline\n",
        "Floor = max(GFLOPs / peak compute, bytes moved / memory bandwidth) with this host's ceilings measured at "
        "run time; bytes are an estimate (weights read once, every activation written and read once).\n",
        _markdown_table(roofline_table(results)),
        "\n",
        settings_footer(results),
    ]
    return "\n".join(parts)


def write_report(profile: DeviceProfile, results: list[Result], fmt: str, out: Path) -> Path:
    """Write one device's report in ``fmt`` to ``out`` (a directory → ``<device>.<ext>``, or a file path)."""
    extension = {"markdown": "md", "json": "json", "csv": "csv"}[fmt]
    path = out / f"{profile.name}.{extension}" if out.suffix == "" else out
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "markdown":
        path.write_text(markdown_report(profile, results))
    elif fmt == "json":
        path.write_text(json.dumps({"schema": "rbench-results/1", "device": profile.name,
                                    "results": list(iter_public(results))}, indent=2) + "\n")
    else:
        pd.json_normalize(list(iter_public(results)), max_level=1).to_csv(path, index=False)
    return path
