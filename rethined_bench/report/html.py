"""Self-contained HTML rendering of a :class:`Report`: inline CSS, grouped table headers, figures as base64 PNG.

The output is XHTML-compatible (every element closed, attributes quoted) so it parses with ``xml.etree``.
"""

from __future__ import annotations

import base64
from html import escape

from .document import Report
from .inline import convert_inline
from .plots import Figure
from .tables import ReportTable

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:110em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:right}
th{border-bottom:2px solid #444}td:first-child,th:first-child{text-align:left}
caption{caption-side:bottom;text-align:left;font-size:.85em;color:#444;padding-top:.4em}
footer{font-size:.85em;color:#444;border-top:1px solid #ccc;margin-top:2em}img{max-width:48em}"""


def _inline(text: str) -> str:
    return convert_inline(text, escape, "<code>{}</code>", "<strong>{}</strong>", "<em>{}</em>")


def html_table(table: ReportTable) -> str:
    """A ``<table>``: one header row of column groups (colspan), one of column names, then the rows."""
    groups = "".join(f'<th colspan="{span}">{escape(group)}</th>' for group, span in table.groups)
    names = "".join(f"<th>{escape(name)}</th>" for _, name in table.frame.columns)
    rows = ["<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows()]
    if not rows:
        rows = [f'<tr><td colspan="{len(table.frame.columns)}">no measured cells</td></tr>']
    return (f'<table id="{escape(table.key)}"><caption>{_inline(table.caption)}</caption>'
            f"<thead><tr>{groups}</tr><tr>{names}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(figure.title)}" />'
            f"<figcaption>{escape(figure.title)}</figcaption></figure>")


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (no external files)."""
    body = [f"<h1>{escape(report.title)}</h1>", f"<p>{_inline(report.intro)}</p>"]
    for table in report.tables:
        body += [f"<h2>{escape(table.title)}</h2>", html_table(table)]
    if report.figures:
        body += ["<h2>Plots</h2>", *(_figure(figure) for figure in report.figures)]
    if report.footer:
        body.append("<footer><h2>Settings</h2>" + "".join(
            f"<p><strong>{escape(label)}.</strong> {_inline(text)}</p>" for label, text in report.footer)
            + "</footer>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8" />'
            f"<title>{escape(report.title)}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
