"""Output formats of ``rbench report``: build each report once as data, then write it in the chosen format.

markdown (the committed report), latex (booktabs, the paper's layout), html (self-contained, figures embedded),
json and csv (per device: the documented results schema, docs/results-schema.md; across devices: Table 2's data).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..devices import DeviceProfile
from ..store import Result, iter_public
from .document import Report, device_report, table2_report
from .html import render_html
from .latex import render_latex
from .markdown import render_markdown
from .plots import write_figures

FORMATS = ("markdown", "json", "csv", "latex", "html")
EXTENSIONS = {"markdown": "md", "json": "json", "csv": "csv", "latex": "tex", "html": "html"}
_WITH_FIGURES = ("markdown", "latex", "html")


def names_file(out: Path, fmt: str) -> bool:
    """Whether ``out`` is a file to write (an existing file, or a new path with the format's extension) rather than
    a directory (an existing one, or any other new path: ``reports.v2`` is a directory)."""
    if out.exists():
        return not out.is_dir()
    return out.suffix == f".{EXTENSIONS[fmt]}"


def report_path(out: Path, name: str, fmt: str) -> Path:
    """``out`` itself when it names a file (:func:`names_file`), else ``out/<name>.<ext>``."""
    return out if names_file(out, fmt) else out / f"{name}.{EXTENSIONS[fmt]}"


def _render_document(report: Report, fmt: str, path: Path) -> str:
    if fmt == "markdown":
        return render_markdown(report, path.parent)
    if fmt == "latex":
        return render_latex(report, path.parent)
    return render_html(report)


def write_report(profile: DeviceProfile, results: list[Result], fmt: str, out: Path) -> Path:
    """Write one device's report in ``fmt``; figures go to ``<report dir>/<device>/`` for the document formats."""
    path = report_path(out, profile.name, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = list(iter_public(results))
    if fmt == "json":
        tables = device_report(profile, results, []).tables
        path.write_text(json.dumps({"schema": "rbench-results/1", "device": profile.name, "results": records,
                                    "tables": [table.to_json() for table in tables]}, indent=2) + "\n")
    elif fmt == "csv":
        pd.json_normalize(records, max_level=1).to_csv(path, index=False)
    else:
        figures = write_figures(results, path.parent / profile.name, profile.name)
        path.write_text(_render_document(device_report(profile, results, figures), fmt, path))
    return path


def write_table2(devices: list[tuple[DeviceProfile, list[Result]]], fmt: str, out: Path) -> Path:
    """Write Table 2 (and the latency matrix) across ``devices`` in ``fmt`` to ``<out>/table2.<ext>``."""
    path = report_path(out, "table2", fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = table2_report(devices)
    table = report.tables[0]
    if fmt == "json":
        path.write_text(json.dumps({"schema": "rbench-tables/1", "tables": [t.to_json() for t in report.tables],
                                    "settings": [list(line) for line in report.footer]}, indent=2) + "\n")
    elif fmt == "csv":  # CSV holds one table: Table 2 (the JSON carries the latency matrix too)
        table.frame.set_axis(table.flat_columns, axis=1).to_csv(path, index=False)
    else:
        path.write_text(_render_document(report, fmt, path))
    return path
