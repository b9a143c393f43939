"""The paper's numbers for a report cell, looked up without failing for models that have no registered spec."""

from __future__ import annotations

import math
from typing import Any

from ..devices import DeviceProfile
from ..errors import UnknownNameError
from ..models import get_model_spec
from ..models.registry import ModelSpec

PAPER_DEVICE = "iPad Pro M2"
PAPER_PROFILE = "ipad-pro-m2"  # the device of the paper's Tables 1 and 3 (latency at 1024/2048/4096)


def safe_spec(model: str) -> ModelSpec | None:
    """The registered spec, or None for a model stored under a name this rbench does not register (no paper data)."""
    try:
        return get_model_spec(model)
    except UnknownNameError:
        return None


def paper_table3(model: str) -> dict[str, Any]:
    """The paper's Table 3 row of ``model`` ({} when unregistered or absent)."""
    spec = safe_spec(model)
    return spec.paper_claims.get("table3", {}) if spec else {}


def paper_latency(profile: DeviceProfile, model: str, resolution: int) -> float | None:
    """The paper's latency (ms) for ``model`` on ``profile`` at a square ``resolution``, where the paper gives one.

    1024 comes from the device's Table 2 row; 2048 and 4096 exist only for the paper's main device (Table 1's time
    column, which repeats Table 3's latencies).
    """
    if resolution == 1024 and model in profile.paper_table2:
        return profile.paper_table2[model].get("latency")
    spec = safe_spec(model)
    if profile.name != PAPER_PROFILE or spec is None:
        return None
    return spec.paper_claims.get("table1_time_ms", {}).get(f"r{resolution}")


def paper_number(value: Any) -> str:
    """A paper value as printed (``:g``), or empty when there is none."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"
