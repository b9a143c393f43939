"""What ``rbench models``, ``rbench devices`` and ``rbench doctor`` show: plain data, and its terminal rendering.

The data (dicts and lists with stable keys) is what ``--json`` prints. The listings render it one line per row at
80 columns (CI logs): short status words and first clauses there, the full text elsewhere: reasons and fixes in
numbered notes below ``doctor``'s table, summaries, settings, ceilings and paper numbers in the detail views
(``rbench models NAME``, ``rbench devices NAME``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich import box
from rich.cells import cell_len, set_cell_size
from rich.console import Console, RenderableType
from rich.padding import Padding
from rich.table import Column, Table
from rich.text import Text

from . import backends, settings
from .devices import DEVICE_FACTS

if TYPE_CHECKING:
    from .devices import DeviceProfile
    from .models import ModelSpec
    from .runners.base import Runner

_CEILING_LABELS = {"fp32_gflops": "fp32 GFLOP/s", "fp16_gflops": "fp16 GFLOP/s", "int8_gops": "int8 GOP/s",
                  "mem_gbps": "memory GB/s"}
_CLAUSE_END = re.compile(r"; | \(|\n")
_GAP = 2  # cells between two columns of a listing


# ------------------------------------------------------------------------------------------------ data


def availability(runner: "Runner") -> dict[str, Any]:
    """Whether ``runner`` works from here: ``{"ok", "reason", "fix"}`` (the fix is advice when ok)."""
    found = runner.availability()
    return {"ok": found.ok, "reason": found.reason, "fix": found.fix}


def _params(name: str, variant: str | None = None) -> int:
    from .models import create_model

    return sum(p.numel() for p in create_model(name, variant).parameters())


def model_info(name: str, *, detail: bool = False) -> dict[str, Any]:
    """One registered model; ``detail`` adds each variant's parameter count, the model's declared limits per
    target and the paper's numbers for it."""
    from .models import BENCH_RESOLUTIONS, get_model_spec
    from .report.paper import paper_params

    spec = get_model_spec(name)
    rule = spec.constraint
    variants = [{"name": variant, "options": options, "benchmarked": variant in spec.benchmark_variants}
                for variant, options in spec.variants.items()]
    info: dict[str, Any] = {
        "name": name, "summary": spec.summary, "source": spec.source, "default_variant": spec.default_variant,
        "variants": variants,
        "params": _params(name), "paper_params_millions": paper_params(name),
        "resolutions": {"multiple_of": rule.multiple_of, "minimum": rule.minimum, "square": rule.square,
                        "why": rule.why, "benchmarked": list(BENCH_RESOLUTIONS)},
    }
    if detail:
        for variant in variants:
            variant["params"] = info["params"] if variant["name"] == spec.default_variant else \
                _params(name, variant["name"])
        info |= {"limits": _limits(spec), "paper": spec.paper_claims}
    return info


def _limits(spec: "ModelSpec") -> list[dict[str, Any]]:
    """Where the model declares it cannot go: ``[{"variant", "targets", "reason"}]``, targets sharing a reason."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for variant in spec.variants:
        for target in backends.target_names():
            reason = spec.unsupported(variant, target)
            if reason:
                grouped.setdefault((variant, reason), []).append(target)
    return [{"variant": variant, "targets": targets, "reason": reason}
            for (variant, reason), targets in grouped.items()]


def device_info(profile: "DeviceProfile", *, detail: bool = False) -> dict[str, Any]:
    """One device profile and whether it is reachable from here; ``detail`` adds the profile file, notes, device
    facts, every connection and toolchain setting with its value and source, ceilings and paper numbers."""
    runner = backends.runner_for(profile)
    info: dict[str, Any] = {
        "name": profile.name, "display": profile.display, "vendor": profile.vendor, "runner": profile.runner,
        "target": profile.target, "precision": profile.precision, "availability": availability(runner),
    }
    if detail:
        info |= {"profile": str(profile.source), "notes": profile.notes,
                 "facts": {key: profile.toolchain[key] for key in DEVICE_FACTS if key in profile.toolchain},
                 "settings": device_settings(profile, runner.settings), "ceilings": dict(profile.ceilings),
                 "paper_table2": profile.paper_table2}
    return info


def device_settings(profile: "DeviceProfile", runner_settings: Any) -> list[dict[str, Any]]:
    """Each profile key the device's runner and exporter read: ``{"key", "value", "source", "env", "used_by",
    "help"}``; source is ``environment`` (the variable ``env`` set it), ``connection``, ``toolchain`` (the profile's
    table) or ``default``."""
    exporter_settings = settings.build(backends.exporter_class(profile.target).settings_class,
                                       profile.settings_values(), source=str(profile.source), env_device=profile.name)
    rows: dict[str, dict[str, Any]] = {}
    for role, instance in (("runner", runner_settings), ("exporter", exporter_settings)):
        for field in dataclasses.fields(instance):
            key = field.metadata.get("key") or field.name
            row = rows.setdefault(key, {"key": key, "value": getattr(instance, field.name),
                                        "source": _setting_source(profile, key),
                                        "env": settings.env_name(profile.name, key), "used_by": [], "help": ""})
            row["used_by"].append(role)
            row["help"] = row["help"] or field.metadata.get("help", "")
    return list(rows.values())


def _setting_source(profile: "DeviceProfile", key: str) -> str:
    if os.environ.get(settings.env_name(profile.name, key)):  # as settings.build reads it: empty does not override
        return "environment"
    for section, table in (("connection", profile.connection), ("toolchain", profile.toolchain)):
        if key in table:
            return section
    return "default"


def doctor_rows(profiles: Iterable["DeviceProfile"]) -> list[dict[str, Any]]:
    """Every runner's availability for each device it serves (with default settings where it serves none),
    ordered by runner: ``[{"runner", "device", "availability"}]``."""
    by_runner: dict[str, list[DeviceProfile]] = {name: [] for name in backends.runner_names()}
    for profile in profiles:
        by_runner.setdefault(profile.runner, []).append(profile)
    rows = []
    for name, served in sorted(by_runner.items()):
        pairs = [(p.name, backends.runner_for(p)) for p in served] or [(None, backends.create_runner(name))]
        rows += [{"runner": name, "device": device, "availability": availability(runner)}
                 for device, runner in pairs]
    return rows


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout, and nothing else (for scripts: ``| jq``)."""
    print(json.dumps(data, indent=2))


# ------------------------------------------------------------------------------------------------ rendering


def _listing(*columns: str | Column) -> Table:
    """A borderless table: a header rule, no column lines, two spaces between columns."""
    return Table(*columns, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                 header_style="bold")


def _name(header: str) -> Column:
    """A column of names: never wrapped or cut."""
    return Column(header, no_wrap=True)


def one_line_table(headers: list[str], rows: list[list[str | Text]], width: int) -> Table:
    """A listing whose rows keep to one line at ``width`` columns: every column as wide as its widest cell but the
    last, which gets the rest, its text cut at a word with an ellipsis where it does not fit."""
    fixed = [max(cell_len(str(cell)) for cell in [header, *column])
             for header, column in zip(headers[:-1], zip(*rows))] if rows else []
    room = max(width - sum(fixed) - _GAP * (len(headers) - 1), cell_len(headers[-1]))
    table = _listing(*map(_name, headers))
    for *first, last in rows:
        table.add_row(*map(_literal, first), last if isinstance(last, Text) else Text(fit(last, room)))
    return table


def _literal(cell: str | Text) -> Text:
    """A cell as written: a reason's ``[connection]`` is text, not rich markup."""
    return cell if isinstance(cell, Text) else Text(cell)


def fit(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` cells, else its longest prefix ending at a word, with an ellipsis."""
    if cell_len(text) <= width:
        return text
    cut = set_cell_size(text, width - 1)
    words = cut.rpartition(" ")[0] or cut
    return words.rstrip(" ,;:") + "…"


def first_clause(reason: str) -> str:
    """A reason's first clause (up to the first ``;``, `` (`` or line end): what a one-line row has room for."""
    return _CLAUSE_END.split(reason, maxsplit=1)[0]


def resolution_rule(rule: dict[str, Any]) -> str:
    """``multiple of 512, ≥512, square``: the accepted (H, W) in a few words."""
    return f"multiple of {rule['multiple_of']}, ≥{rule['minimum']}" + (", square" if rule["square"] else "")


def size_rule(rule: dict[str, Any]) -> str:
    """``×512 ≥512 square``: :func:`resolution_rule` in the few characters a listing row has."""
    return f"×{rule['multiple_of']} ≥{rule['minimum']}" + (" square" if rule["square"] else "")


def models_table(rows: list[dict[str, Any]], width: int) -> Table:
    """One line per model: name, variants, parameters (ours and the paper's), accepted sizes (multiple, minimum)."""
    params = [f"{row['params']:,}" for row in rows]
    digits = max(map(len, params), default=0)
    lines = [[row["name"], ", ".join(v["name"] for v in row["variants"]), count.rjust(digits), _origin(row),
              size_rule(row["resolutions"])] for row, count in zip(rows, params)]
    return one_line_table(["model", "variants", "params", "origin", "sizes"], lines, width)


def _origin(row: dict[str, Any]) -> str:
    """Where a model comes from, in a word: the paper's parameter count for rbench's own, else its source."""
    if row["source"] != "built-in":
        return "entry point" if row["source"].startswith("entry point") else "import path"
    return f"paper {row['paper_params_millions']}M" if row["paper_params_millions"] else "built-in"


def devices_table(rows: list[dict[str, Any]], width: int) -> Table:
    """One line per device: name, runner, target and precision, reachable (or the first clause of why not)."""
    lines = [[row["name"], row["runner"], f"{row['target']} {row['precision']}",
              _yes() if row["availability"]["ok"] else f"no: {first_clause(row['availability']['reason'])}"]
             for row in rows]
    return one_line_table(["device", "runner", "target", "reachable"], lines, width)


def _yes() -> Text:
    return Text("yes", style="green")


def doctor_report(rows: list[dict[str, Any]], width: int) -> list[RenderableType]:
    """The table (one line per runner and device: ready or not, the first clause of why not) and below it the
    numbered notes: each distinct reason in full with its fix, naming the devices it concerns."""
    lines: list[list[str | Text]] = []
    notes: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        found, device = row["availability"], row["device"] or "(no device)"
        lines.append([row["runner"], device, _yes() if found["ok"] else Text("no", style="red"),
                      first_clause(found["reason"])])
        if found["reason"] or found["fix"]:
            notes.setdefault((row["runner"], found["reason"], found["fix"]), []).append(device)
    table = one_line_table(["runner", "device", "ready", "reason"], lines, width)
    listed = Table.grid(padding=(0, 1))
    listed.add_column(justify="right", no_wrap=True)
    listed.add_column()
    for number, ((runner, reason, fix), devices) in enumerate(notes.items(), 1):
        label = "fix" if reason else "note"
        text = Text.assemble((f"{', '.join(devices)} ({runner})", "bold"), f": {reason or 'ready'}\n",
                             (f"{label}: ", "bold"), fix)
        listed.add_row(f"{number}.", text)
    return [table, Text(""), listed] if notes else [table]


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    return grid


def _section(title: str) -> Text:
    return Text.assemble("\n", (title, "bold underline"))


def device_detail(info: dict[str, Any]) -> list[RenderableType]:
    """Everything about one device: identity, reachability (reason and fix), settings with their sources,
    ceilings with their source, the paper's numbers."""
    found = info["availability"]
    about = _grid()
    for label, value in (("display", info["display"]), ("vendor", info["vendor"]),
                         ("target", f"{info['target']} {info['precision']}"), ("runner", info["runner"]),
                         ("profile", info["profile"]), ("notes", info["notes"]),
                         ("facts", ", ".join(f"{k} {v}" for k, v in info["facts"].items())),
                         ("reachable", "yes" if found["ok"] else f"no: {found['reason']}"),
                         ("fix" if not found["ok"] else "note", found["fix"])):
        if value:
            about.add_row(label, Text(str(value)))
    out: list[RenderableType] = [Text(info["name"], style="bold"), about,
                                 _section(f"settings ({settings.env_name(info['name'], '<key>')} overrides)"),
                                 _settings_grid(info["settings"]), _section("ceilings"),
                                 _ceilings_grid(info["ceilings"])]
    if info["paper_table2"]:
        out += [_section("paper, Table 2 (ms at 1024x1024)"), _latency_load("model", info["paper_table2"])]
    return out


def _source_label(row: dict[str, Any]) -> str:
    """Where a setting's value came from, as the user would write it: the variable, ``[table]`` or ``default``."""
    return {"environment": row["env"], "default": "default"}.get(row["source"], f"[{row['source']}]")


def _shown(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)


def _settings_grid(rows: list[dict[str, Any]]) -> Table:
    grid = _grid()
    for row in rows:
        grid.add_row(row["key"], Text.assemble(_shown(row["value"]),
                                               (f"  {_source_label(row)} · {', '.join(row['used_by'])}", "cyan"),
                                               "\n", (row["help"], "dim")))
    return grid


def _ceilings_grid(ceilings: dict[str, Any]) -> RenderableType:
    grid = _grid()
    for key, label in _CEILING_LABELS.items():
        if key in ceilings:
            grid.add_row(label, str(ceilings[key]))
    if ceilings.get("measure_at_runtime"):
        grid.add_row("measured", "at run time by the runner, cached per host beside the results database")
    if ceilings.get("source"):
        grid.add_row("source", Text(ceilings["source"]))
    return grid if grid.row_count else Text("none in the profile: no roofline floor")


def _latency_load(first: str, table2: dict[str, dict[str, float]]) -> Table:
    """Paper Table 2 rows (latency and load, ms) keyed by model or device."""
    table = _listing(_name(first), Column("latency", justify="right"), Column("load", justify="right"))
    for name, row in table2.items():
        table.add_row(name, _number(row.get("latency")), _number(row.get("load")))
    return table


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def model_detail(info: dict[str, Any]) -> list[RenderableType]:
    """Everything about one model: summary, variants with their options and parameters, accepted resolutions,
    declared limits, the paper's numbers."""
    rule = info["resolutions"]
    about = _grid()
    about.add_row("summary", Text(info["summary"]))
    about.add_row("source", Text(info["source"]))
    about.add_row("resolutions", Text(f"{resolution_rule(rule)}" + (f" ({rule['why']})" if rule["why"] else "")))
    about.add_row("benchmarked", ", ".join(map(str, rule["benchmarked"])) + " (what rbench run measures)")
    about.add_row("default", f"variant {info['default_variant']}")
    variants = _listing(_name("variant"), Column("params", justify="right"), "benchmarked", "options")
    for variant in info["variants"]:
        options = ", ".join(f"{k}={v}" for k, v in variant["options"].items()) or "-"
        variants.add_row(variant["name"], f"{variant['params']:,}", "yes" if variant["benchmarked"] else "no",
                         Text(options))
    return [Text(info["name"], style="bold"), about, _section("variants"), variants, _section("limits"),
            *_limits_list(info["limits"]), *_paper(info["paper"], info["paper_params_millions"])]


def _limits_list(limits: list[dict[str, Any]]) -> list[RenderableType]:
    """Each declared limit: the variant and targets, then the model's reason, indented."""
    if not limits:
        return [Text("none declared: every variant exports to every target")]
    out: list[RenderableType] = []
    for limit in limits:
        out += [Text(f"{limit['variant']} on {', '.join(limit['targets'])}", style="bold"),
                Padding(Text(limit["reason"]), (0, 0, 0, 2))]
    return out


def _paper(paper: dict[str, Any], params_millions: float | None) -> list[RenderableType]:
    if not paper:
        return []
    out: list[RenderableType] = [_section("paper (RETHINED, WACV 2025)")]
    facts = _grid()
    if params_millions:
        facts.add_row("params", f"{params_millions}M (Table 3)")
    times = paper.get("table1_time_ms", {})
    if times:
        facts.add_row("iPad Pro M2", ", ".join(f"{_number(ms)} ms @{key.lstrip('r')}" for key, ms in times.items())
                      + " (Table 1)")
    out.append(facts)
    if paper.get("table2"):
        out += [Text("Table 2 (ms at 1024x1024):"), _latency_load("device", paper["table2"])]
    return out


def print_all(console: Console, renderables: list[RenderableType]) -> None:
    """Print a listing's or a detail view's parts in order."""
    for renderable in renderables:
        console.print(renderable)
