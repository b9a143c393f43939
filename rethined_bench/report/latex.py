"""LaTeX rendering of a :class:`Report`: a standalone article with booktabs tables in the paper's layout.

Grouped headers (device / measured / paper) are ``\\multicolumn`` spans with ``\\cmidrule``s under them, as in the
RETHINED paper; figures are ``\\includegraphics`` of the PNGs written next to the report.
"""

from __future__ import annotations

from pathlib import Path

from .document import Report
from .inline import convert_inline
from .tables import ReportTable

_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "†": r"\textdagger{}", "…": r"\ldots{}",
    "×": r"$\times$", "÷": r"$\div$", "≥": r"$\geq$", "⁶": r"\textsuperscript{6}", "⁹": r"\textsuperscript{9}",
    "→": r"$\rightarrow$", "—": "---", "–": "--", "µ": r"\textmu{}", "²": r"\textsuperscript{2}",
}
_PREAMBLE = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage[utf8]{inputenc}
\usepackage{textcomp}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage[margin=1.5cm,landscape]{geometry}
"""


def escape(text: str) -> str:
    """Text made safe for LaTeX (special characters and the non-ASCII symbols the tables use)."""
    return "".join(_ESCAPES.get(char, char) for char in text)


def _inline(text: str) -> str:
    return convert_inline(text, escape, r"\texttt{{{}}}", r"\textbf{{{}}}", r"\emph{{{}}}")


def latex_table(table: ReportTable) -> str:
    """One booktabs ``table`` environment: grouped header, column names, rows, caption below as a note."""
    width = len(table.frame.columns)
    spec = "l" + "r" * (width - 1)  # the row label left, numbers right
    group_cells, rules, start = [], [], 1
    for group, span in table.groups:
        group_cells.append(rf"\multicolumn{{{span}}}{{c}}{{{escape(group)}}}" if group else " & ".join([""] * span))
        if group:
            rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
        start += span
    names = " & ".join(escape(name) for _, name in table.frame.columns)
    body = [" & ".join(escape(cell) for cell in row) + r" \\" for row in table.rows()]
    if not body:
        body = [rf"\multicolumn{{{width}}}{{c}}{{no measured cells}} \\"]
    lines = [
        r"\begin{table}[htbp]", r"\centering", rf"\caption{{{escape(table.title)}}}", rf"\label{{tab:{table.key}}}",
        r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
        " & ".join(group_cells) + r" \\", *rules, names + r" \\", r"\midrule", *body, r"\bottomrule",
        r"\end{tabular}}", r"\par\smallskip\footnotesize " + _inline(table.caption), r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def render_latex(report: Report, base: Path) -> str:
    """The report as a compilable LaTeX document; figure paths are relative to ``base``."""
    parts = [_PREAMBLE, r"\begin{document}", rf"\section*{{{escape(report.title)}}}", _inline(report.intro), ""]
    parts += [latex_table(table) for table in report.tables]
    for figure in report.figures:
        parts += [r"\begin{figure}[htbp]", r"\centering",
                  rf"\includegraphics[width=0.7\linewidth]{{{figure.png.relative_to(base).as_posix()}}}",
                  rf"\caption{{{escape(figure.title)}}}", r"\end{figure}", ""]
    if report.footer:
        parts.append(r"\subsection*{Settings}")
        parts += [rf"\noindent\textbf{{{escape(label)}.}} {_inline(text)}\par" for label, text in report.footer]
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"
