"""Terminal rendering of a :class:`Report` with rich (what ``rbench report`` prints without ``--format``)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .document import Report
from .tables import ReportTable


def rich_table(table: ReportTable) -> Table:
    """A rich Table whose headers show the column group above the column name."""
    headers = [f"{group}\n{name}" if group else name for group, name in table.frame.columns]
    out = Table(*headers, title=table.title)
    for row in table.rows():
        out.add_row(*(Text(cell) for cell in row))  # literal text: failure reasons may contain [brackets]
    return out


def print_report(console: Console, report: Report) -> None:
    """Print the title and every table of ``report`` (captions and footer omitted; the files carry them)."""
    console.rule(report.title)
    for table in report.tables:
        console.print(rich_table(table))
