"""A report as data: title, intro, tables, figures and the settings footer, built once and rendered per format."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..devices import DeviceProfile
from ..store import Result
from .plots import Figure
from .tables import (ReportTable, device_table, hosted_note, latency_matrix, load_table, ratio_table, roofline_table,
                     source_papers_table, table2, table3)


@dataclass(frozen=True)
class Report:
    """Everything one report file shows; ``footer`` is (label, text) pairs naming how the numbers were measured."""

    name: str
    title: str
    intro: str
    tables: list[ReportTable]
    footer: list[tuple[str, str]]
    figures: list[Figure] = field(default_factory=list)


def _generated() -> str:
    return f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `rbench report`."


def settings_lines(results: list[Result]) -> list[tuple[str, str]]:
    """Protocol, runner settings, host, versions, date and rbench git sha of the newest measured cell."""
    measured = [r for r in results if r.status == "ok"]
    if not measured:
        return []
    newest = max(measured, key=lambda r: r.created_at)
    env, protocol, settings = newest.environment or {}, newest.protocol or {}, newest.settings or {}
    host = env.get("host", {})
    rbench = env.get("rbench", {})
    hosted = [("Hosted measurements", f"{note}.") for note in dict.fromkeys(filter(None, map(hosted_note,
                                                                                           measured)))]
    return hosted + [
        ("Protocol", f"{protocol.get('processes')} fresh processes × ({protocol.get('warmup')} warm-up + timed "
                     f"iterations until ≥{protocol.get('min_iters')} and ≥{protocol.get('min_time_s')} s, capped "
                     f"at {protocol.get('max_time_s')} s); latency = median of all timed iterations, batch 1, fixed "
                     "shapes; what a timed iteration includes is the runner's (below)."),
        ("Runner", ", ".join(f"{k}={v}" for k, v in sorted(settings.items()) if k != "hosted") + "."),
        ("Host", f"{host.get('cpu')}, {host.get('usable_cores')} cores, {host.get('memory_gib')} GiB, "
                 f"{host.get('os')}."),
        ("Versions", ", ".join(f"{k} {v}" for k, v in sorted(env.get("versions", {}).items())) + "."),
        ("rbench", f"{rbench.get('version')} (git {rbench.get('git')}); measured "
                   f"{min(r.created_at for r in measured)} to {newest.created_at}."),
    ]


def device_report(profile: DeviceProfile, results: list[Result], figures: list[Figure],
                  detailed: bool = True) -> Report:
    """One device: Table 2 (where the paper measured this device), Table 3, ratios, load time and memory,
    roofline, the models' own papers' numbers (where any measured model has some), figures, settings."""
    intro = (f"Target `{profile.target}` {profile.precision}, runner `{profile.runner}`. {_generated()}")
    tables = ([table2([(profile, results)], detailed)] if profile.paper_table2 else []) + [
        table3(results, detailed), ratio_table(profile, results), load_table(results),
        roofline_table(profile, results), device_table(profile, results)]
    tables += [table for table in [source_papers_table(results)] if table is not None]
    return Report(profile.name, f"rbench report: {profile.display} (`{profile.name}`)", intro, tables,
                  settings_lines(results), figures)


def table2_report(devices: list[tuple[DeviceProfile, list[Result]]], detailed: bool = True) -> Report:
    """Every device in the store: Table 2 and the latency matrix, with each device's settings in the footer."""
    footer = [(f"{profile.name} {label}", text) for profile, results in devices
              for label, text in settings_lines(results)]
    names = ", ".join(f"`{profile.name}` ({profile.display})" for profile, _ in devices)
    return Report("table2", "rbench report: Table 2 across devices", f"Devices: {names}. {_generated()}",
                  [table2(devices, detailed), latency_matrix(devices)], footer)
