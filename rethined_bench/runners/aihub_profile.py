"""Read the dict that Qualcomm AI Hub's ``InferenceJob.download_profile()`` returns (qai-hub 0.56): dict in,
:class:`HubProfile` out.

Pure: no qai-hub import and no I/O, so a profile fetched live and one reloaded from the JSON that
``download_profile(path)`` writes (tuples become lists there) read the same. Layout and units are in
``../shared/reference/backends.md`` §3.5.

The client builds ``{"execution_summary": {...}, "execution_detail": [...]}`` from the server's ``ProfileDetail``
protobuf, and the summary keys depend on that message's version:

- legacy (major version not 1): 16 keys, but only ``estimated_inference_time``, ``first_load_time`` (the deprecated
  ``load_time``) and ``compile_peak_memory`` (the deprecated ``peak_memory_usage``) hold values; the rest are None.
- 1.0: only the 8 scalars (``estimated_inference_time``, ``{first_load,warm_load,compile}_time`` and their
  ``*_peak_memory``). They are protobuf scalars, so a value the server did not set reads 0, not None.
- 1.1: adds ``{compile,first_load,warm_load,inference}_memory_{increase,peak}_range`` as (low, high) tuples, or None
  when the server sent no memory record for that stage.
- 1.2+: adds ``all_{compile,first_load,warm_load,inference}_times`` lists (possibly empty).

Times are integer microseconds and memory integer bytes; :class:`HubProfile` holds milliseconds and MiB (2^20
bytes). Every layer of ``execution_detail`` has a ``compute_unit`` (NPU, GPU, CPU or UNSPECIFIED) and, from detail
1.3, may have an ``execution_time`` in µs (the minimum over runs). Every key is read with ``.get()``.

The unit helpers :func:`to_ms` and :func:`to_mib_range` are shared with :mod:`.aihub_perf_yaml`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RbenchError

US_PER_MS = 1000
BYTES_PER_MIB = 2**20
# also the tie order of the primary unit: NPU beats GPU beats CPU
COMPUTE_UNITS = ("NPU", "GPU", "CPU", "UNSPECIFIED")


def to_ms(value: float | None, *, per_ms: float = US_PER_MS) -> float | None:
    """``value`` (in units of which ``per_ms`` make a millisecond; µs by default) in ms; None stays None."""
    return None if value is None else value / per_ms


def to_mib_range(bounds: Sequence[float | None] | None, *,
                 per_mib: float = BYTES_PER_MIB) -> tuple[float, float] | None:
    """A (low, high) pair (in units of which ``per_mib`` make a MiB; bytes by default) in MiB.

    None when the pair or either bound is missing: half a range says nothing reliable.
    """
    if bounds is None:
        return None
    low, high = bounds
    if low is None or high is None:
        return None
    return (low / per_mib, high / per_mib)


@dataclass(frozen=True)
class UnitShare:
    """The layers one compute unit ran, and the sum of the execution times they report."""

    layers: int
    time_ms: float


@dataclass(frozen=True)
class Placement:
    """Where the layers of ``execution_detail`` ran.

    ``units`` has one entry per unit of :data:`COMPUTE_UNITS`, in that order; a layer without a compute unit, or
    with one the client did not know, counts as UNSPECIFIED. A layer without ``execution_time`` counts as a layer
    but adds no time. ``primary_unit`` is the unit with most layers (ties: NPU > GPU > CPU > UNSPECIFIED), None when
    there are no layers.
    """

    units: dict[str, UnitShare]
    layer_count: int
    primary_unit: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for storage."""
        return {
            "units": {unit: {"layers": share.layers, "time_ms": share.time_ms} for unit, share in self.units.items()},
            "layer_count": self.layer_count,
            "primary_unit": self.primary_unit,
        }


def placement_summary(execution_detail: Iterable[Mapping[str, Any]] | None) -> Placement:
    """Count the layers per compute unit and sum their execution times (the client reports no such summary)."""
    layers = dict.fromkeys(COMPUTE_UNITS, 0)
    time_us = dict.fromkeys(COMPUTE_UNITS, 0)
    for layer in execution_detail or ():
        unit = layer.get("compute_unit")
        unit = unit if unit in layers else "UNSPECIFIED"
        layers[unit] += 1
        time_us[unit] += layer.get("execution_time") or 0
    total = sum(layers.values())
    return Placement(
        units={unit: UnitShare(layers[unit], to_ms(time_us[unit])) for unit in COMPUTE_UNITS},
        layer_count=total,
        # max() keeps the first of equal counts, so COMPUTE_UNITS' order breaks ties
        primary_unit=max(COMPUTE_UNITS, key=layers.__getitem__) if total else None,
    )


def describe_placement(placement: Placement) -> str:
    """One line such as ``312/340 layers on NPU, 28 on CPU``: the primary unit first, then the others that ran any."""
    if placement.primary_unit is None:
        return "no per-layer placement reported"
    primary = placement.primary_unit
    parts = [f"{placement.units[primary].layers}/{placement.layer_count} layers on {primary}"]
    parts += [f"{share.layers} on {unit}" for unit, share in placement.units.items()
              if unit != primary and share.layers]
    return ", ".join(parts)


@dataclass(frozen=True)
class HubProfile:
    """One AI Hub profile, in ms and MiB.

    - ``samples_ms``: every timed inference (``all_inference_times``, detail 1.2+); empty before 1.2. Compute the
      median and percentiles from these: how the service aggregates ``estimated_ms`` is undocumented (its own test
      fixture has it below every sample).
    - ``estimated_ms``, ``first_load_ms`` (cold), ``warm_load_ms``: None when absent or 0 (0 is the protobuf
      default for a value the server did not set; nothing loads or runs in 0 µs).
    - ``compile_ms``: on-device compile, 0.0 for ahead-of-time assets (context binaries); None in legacy details.
    - ``*_peak_mib``: (low, high) peak-memory range over the runs, detail 1.1+; None before or when not reported.
    """

    samples_ms: tuple[float, ...]
    estimated_ms: float | None
    first_load_ms: float | None
    warm_load_ms: float | None
    compile_ms: float | None
    inference_peak_mib: tuple[float, float] | None
    first_load_peak_mib: tuple[float, float] | None
    warm_load_peak_mib: tuple[float, float] | None
    placement: Placement

    @property
    def primary_unit(self) -> str | None:
        return self.placement.primary_unit

    @property
    def layer_count(self) -> int:
        return self.placement.layer_count

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for storage: tuples become lists."""
        return {
            "samples_ms": list(self.samples_ms),
            "estimated_ms": self.estimated_ms,
            "first_load_ms": self.first_load_ms,
            "warm_load_ms": self.warm_load_ms,
            "compile_ms": self.compile_ms,
            "inference_peak_mib": _listed(self.inference_peak_mib),
            "first_load_peak_mib": _listed(self.first_load_peak_mib),
            "warm_load_peak_mib": _listed(self.warm_load_peak_mib),
            "placement": self.placement.to_dict(),
        }


def _listed(bounds: tuple[float, float] | None) -> list[float] | None:
    return None if bounds is None else list(bounds)


def _set_ms(value: float | None) -> float | None:
    """µs → ms, with the protobuf's unset 0 read as missing."""
    return to_ms(value) if value else None


def parse_profile(profile: Mapping[str, Any]) -> HubProfile:
    """Turn one ``download_profile()`` dict into a :class:`HubProfile`.

    Raises :class:`RbenchError` for ``{}`` (what the client returns for a failed job or a job without profile
    detail) and for a profile without any inference latency (no samples and no estimate).
    """
    if not isinstance(profile, Mapping):
        raise RbenchError(f"expected the dict that download_profile() returns, got {type(profile).__name__}")
    if not profile:
        raise RbenchError("AI Hub returned an empty profile: the job failed or has no profile detail")
    summary = profile.get("execution_summary") or {}
    result = HubProfile(
        samples_ms=tuple(to_ms(us) for us in summary.get("all_inference_times") or ()),
        estimated_ms=_set_ms(summary.get("estimated_inference_time")),
        first_load_ms=_set_ms(summary.get("first_load_time")),
        warm_load_ms=_set_ms(summary.get("warm_load_time")),
        compile_ms=to_ms(summary.get("compile_time")),
        inference_peak_mib=to_mib_range(summary.get("inference_memory_peak_range")),
        first_load_peak_mib=to_mib_range(summary.get("first_load_memory_peak_range")),
        warm_load_peak_mib=to_mib_range(summary.get("warm_load_memory_peak_range")),
        placement=placement_summary(profile.get("execution_detail")),
    )
    if not result.samples_ms and result.estimated_ms is None:
        raise RbenchError("AI Hub profile has no inference latency: no all_inference_times and no "
                          "estimated_inference_time")
    return result
