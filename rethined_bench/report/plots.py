"""Report figures (matplotlib, Agg backend), each written as PNG and SVG next to the report.

Three views of one device's cells: latency against resolution (log scale), latency against counted work (the
paper's point that FLOPs do not predict latency), and measured latency against the roofline floor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen before pyplot loads)
from matplotlib.axes import Axes  # noqa: E402

from ..store import Result  # noqa: E402
from .tables import model_label  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """A written figure: its name (file stem), title, and the PNG and SVG paths."""

    name: str
    title: str
    png: Path
    svg: Path


def _ok(results: list[Result]) -> list[Result]:
    return [r for r in results if r.status == "ok" and r.latency]


def _latency_vs_resolution(ax: Axes, results: list[Result]) -> bool:
    """Against the side of a square with as many pixels (√(H·W)); ticks name the sizes (``1024``, ``1024x576``)."""
    by_model: dict[str, list[tuple[float, float]]] = {}
    ticks: dict[float, str] = {}
    for r in _ok(results):
        side = math.sqrt(r.height * r.width)
        ticks[side] = r.resolution_label
        by_model.setdefault(model_label(r), []).append((side, r.latency["median"]))
    for label, points in sorted(by_model.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(yscale="log", xlabel="resolution (px, √(H·W))", ylabel="median latency (ms)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [ticks[side] for side in sorted(ticks)])
    return bool(by_model)


def _scatter(ax: Axes, points: list[tuple[float, float, str]], xlabel: str) -> bool:
    for x, y, label in points:
        ax.scatter(x, y)
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="median latency (ms)")
    return bool(points)


def _latency_vs_flops(ax: Axes, results: list[Result]) -> bool:
    points = [(r.work["gflops"], r.latency["median"], f"{model_label(r)}@{r.resolution_label}")
              for r in _ok(results) if (r.work or {}).get("gflops")]
    return _scatter(ax, points, "GFLOPs (2 per multiply-add, torch FlopCounterMode)")


def _measured_vs_roofline(ax: Axes, results: list[Result]) -> bool:
    points = [(r.roofline["floor_ms"], r.latency["median"], f"{model_label(r)}@{r.resolution_label}")
              for r in _ok(results) if (r.roofline or {}).get("floor_ms")]
    if points:
        low = min(min(x, y) for x, y, _ in points)
        high = max(max(x, y) for x, y, _ in points)
        ax.plot([low, high], [low, high], linestyle="--", color="grey", label="measured = floor")
    return _scatter(ax, points, "roofline floor (ms)")


_PLOTS: dict[str, tuple[str, Callable[[Axes, list[Result]], bool]]] = {
    "latency_vs_resolution": ("Latency vs resolution", _latency_vs_resolution),
    "latency_vs_flops": ("Latency vs FLOPs (FLOPs do not predict latency)", _latency_vs_flops),
    "measured_vs_roofline": ("Measured latency vs roofline floor", _measured_vs_roofline),
}


def write_figures(results: list[Result], directory: Path, device: str) -> list[Figure]:
    """Draw every figure that has data into ``directory`` (PNG and SVG); figures without data are skipped."""
    figures = []
    for name, (title, draw) in _PLOTS.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        try:
            if not draw(ax, results):
                continue
            ax.set_title(f"{device}: {title}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            fig.tight_layout()
            directory.mkdir(parents=True, exist_ok=True)
            png, svg = directory / f"{name}.png", directory / f"{name}.svg"
            fig.savefig(png)
            fig.savefig(svg)
            figures.append(Figure(name, title, png, svg))
        finally:
            plt.close(fig)
    return figures
