"""Latency statistics per cell: every sample kept, the process as the unit of replication, instability flagged.

Percentiles are nearest-rank (as trtexec and onnxruntime_perf_test report them); p99 needs at least 100 samples.
Instability rules follow measurement.md §4: coefficient of variation, max/median, drift between process medians,
and pyperf's "min or max ≥ 50% away from the mean".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

CV_LIMIT = 0.10  # host wall times (trtexec's 2.5% applies to device compute times)
MAX_OVER_MEDIAN_LIMIT = 1.5
DRIFT_LIMIT = 0.10  # spread of process medians relative to their median
P99_MIN_SAMPLES = 100


@dataclass(frozen=True)
class LatencyStats:
    n: int
    median: float
    min: float
    max: float
    mean: float
    std: float
    p90: float
    p99: float | None
    cv: float
    processes: int
    process_medians: list[float]
    median_of_process_medians: float
    unstable: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nearest_rank(samples: np.ndarray, percent: float) -> float:
    return float(np.percentile(samples, percent, method="inverted_cdf"))


def summarize(process_samples: list[list[float]]) -> LatencyStats:
    """Statistics of timed samples (ms) grouped by process; raises ValueError when there are none."""
    groups = [np.asarray(s, dtype=np.float64) for s in process_samples if len(s)]
    if not groups:
        raise ValueError("no samples to summarize")
    samples = np.concatenate(groups)
    n = samples.size
    median = float(np.median(samples))
    mean = float(samples.mean())
    std = float(samples.std(ddof=1)) if n > 1 else 0.0
    process_medians = [float(np.median(g)) for g in groups]
    stats = dict(
        n=n, median=median, min=float(samples.min()), max=float(samples.max()), mean=mean, std=std,
        p90=nearest_rank(samples, 90), p99=nearest_rank(samples, 99) if n >= P99_MIN_SAMPLES else None,
        cv=std / mean if mean > 0 else 0.0, processes=len(groups), process_medians=process_medians,
        median_of_process_medians=float(np.median(process_medians)),
    )
    reasons = instability_reasons(samples, process_medians)
    return LatencyStats(**stats, unstable=bool(reasons), reasons=reasons)


def instability_reasons(samples: np.ndarray, process_medians: list[float]) -> list[str]:
    """Why a cell's numbers should not be trusted as they are (empty when stable)."""
    reasons = []
    median, mean = float(np.median(samples)), float(samples.mean())
    if samples.size > 1:
        cv = float(samples.std(ddof=1)) / mean
        if cv > CV_LIMIT:
            reasons.append(f"CV {cv:.1%} > {CV_LIMIT:.0%}")
    if samples.max() / median > MAX_OVER_MEDIAN_LIMIT:
        reasons.append(f"max/median {samples.max() / median:.2f} > {MAX_OVER_MEDIAN_LIMIT}")
    if abs(samples.min() - mean) >= 0.5 * mean or abs(samples.max() - mean) >= 0.5 * mean:
        reasons.append("min or max >= 50% away from the mean")
    if len(process_medians) > 1:
        spread = (max(process_medians) - min(process_medians)) / float(np.median(process_medians))
        if spread > DRIFT_LIMIT:
            reasons.append(f"process medians spread {spread:.1%} > {DRIFT_LIMIT:.0%}")
    return reasons
