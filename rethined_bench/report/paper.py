"""The paper's numbers for a report cell, looked up without failing for models that have no registered spec."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..devices import DeviceProfile
from ..errors import UnknownNameError
from ..models import get_model_spec, paper_claims
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


def paper_latency(profile: DeviceProfile, model: str, size: tuple[int, int]) -> float | None:
    """The paper's latency (ms) for ``model`` on ``profile`` at ``size`` (H, W), where the paper gives one.

    The paper measured square sizes only: 1024 comes from the device's Table 2 row; 2048 and 4096 exist only for
    the paper's main device (Table 1's time column, which repeats Table 3's latencies).
    """
    resolution, width = size
    if resolution != width:
        return None
    if resolution == 1024 and model in profile.paper_table2:
        return profile.paper_table2[model].get("latency")
    spec = safe_spec(model)
    if profile.name != PAPER_PROFILE or spec is None:
        return None
    return spec.paper_claims.get("table1_time_ms", {}).get(f"r{resolution}")


def paper_number(value: Any) -> str:
    """A paper value as printed (``:g``), or empty when there is none."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


@dataclass(frozen=True)
class SourceClaim:
    """One number a model's own (or a comparing) paper printed, with the hardware and size it was measured at."""

    model: str
    variant: str | None  # None: the model's default variant
    source: str
    hardware: str
    resolution: int | None
    printed: str  # the number as printed, with its unit
    params_millions: float | None = None


# paper_claims.toml table -> (source, hardware, resolution); rows keyed by the paper's model names
_SOURCES = {
    ("hifill", "table2"): ("HiFill (CVPR 2020), Table 2", "GTX 1080 Ti"),
    ("in2", "table9"): ("IN2, Table 9", "RTX 4090"),
    ("wavemix", "table1"): ("WaveMix, Table 1 (STL-10, 96x96)", "GTX 1080"),
}
# the papers' names for rbench's (model, variant), where they differ: WaveMix's "about 14M" is WavePaint's 8x4
_MODEL_NAMES = {"wavemix": ("wavepaint", "8x4")}


def source_claims() -> list[SourceClaim]:
    """The seed papers' own numbers for rbench's models (HiFill, IN2, WaveMix/WavePaint, LaMa), beside RETHINED's."""
    claims_data = paper_claims()
    claims: list[SourceClaim] = []
    for (paper, table), (source, hardware) in _SOURCES.items():
        for name, row in claims_data[paper][table].items():
            if not isinstance(row, dict):
                continue
            model, variant = _MODEL_NAMES.get(name, (name, None))
            params = row.get("params_millions")
            for key, value in row.items():
                if key.startswith(("time_", "latency_")):
                    size = int(key.rsplit("_", 1)[1])
                    claims.append(SourceClaim(model, variant, source, hardware, size, f"{value:g} ms", params))
                elif key == "images_per_s":
                    claims.append(SourceClaim(model, variant, source, hardware, 96, f"{value:g} img/s", params))
    lama = claims_data["lama"]["params"]
    claims += [SourceClaim("lama", variant, "LaMa (WACV 2022)", "", None, f"{lama[key]:g}M params", lama[key])
               for variant, key in (("fourier", "lama_fourier_millions"), ("big", "big_lama_millions"))]
    return [claim for claim in claims if safe_spec(claim.model) is not None]


def paper_params(model: str, variant: str | None = None) -> float | None:
    """The parameter count (millions) a paper prints for ``model``'s ``variant`` (default: the default variant):
    RETHINED's Table 3, else the model's own or a comparing paper's, preferring a claim made for that variant."""
    spec = safe_spec(model)
    if spec is None:
        return None
    variant = variant or spec.default_variant
    if variant == spec.default_variant and spec.paper_claims.get("table3", {}).get("params") is not None:
        return spec.paper_claims["table3"]["params"]
    claims = [c for c in source_claims() if c.model == model and c.params_millions is not None
              and (c.variant or spec.default_variant) == variant]
    claims.sort(key=lambda c: c.variant is None)  # a claim naming the variant first
    return claims[0].params_millions if claims else None
