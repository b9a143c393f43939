"""Markdown rendering of a :class:`Report` (the committed report, e.g. ``reports/host-cpu.md``)."""

from __future__ import annotations

from pathlib import Path

from .document import Report
from .tables import ReportTable


def markdown_table(table: ReportTable) -> str:
    """A pipe table with one-line "group: column" headers; ``_no measured cells_`` when empty."""
    if table.frame.empty:
        return "_no measured cells_\n"
    header = "| " + " | ".join(table.flat_columns) + " |"
    rule = "|" + "|".join("---" for _ in table.flat_columns) + "|"
    body = ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table.rows()]
    return "\n".join([header, rule, *body]) + "\n"


def render_markdown(report: Report, base: Path) -> str:
    """The report as Markdown; figures are linked relative to ``base`` (the report file's directory)."""
    parts = [f"# {report.title}\n", f"{report.intro}\n"]
    for table in report.tables:
        parts += [f"## {table.title}\n", f"{table.caption}\n", markdown_table(table)]
    if report.figures:
        parts.append("## Plots\n")
        parts += [f"![{figure.title}]({figure.png.relative_to(base).as_posix()}) "
                  f"([SVG]({figure.svg.relative_to(base).as_posix()}))\n" for figure in report.figures]
    if report.footer:
        parts.append("**Settings.** " + "\n\n".join(f"{label}: {text}" for label, text in report.footer) + "\n")
    return "\n".join(parts)
