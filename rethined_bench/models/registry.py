"""Model registry in the style of timm: models register a factory, users create them by name.

A registered model is an inpainting *pipeline*: ``forward(image, mask) -> image`` with ``image`` (B,3,H,W) in [0,1],
``mask`` (B,1,H,W) in {0,1} with 1 = hole, and the composited result at the input's resolution (DESIGN.md).
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import RbenchError, UnknownNameError, UnsupportedResolutionError

BENCH_RESOLUTIONS = (1024, 2048, 4096)
# (variant, target, device or None) -> why the model cannot be exported or run there, or None
Limits = Callable[[str, str, "str | None"], "str | None"]
# (variant, target) -> factory options selecting the form exported to that target (e.g. a matmul DFT where the
# target has no FFT op); the same function either way, so parity and the manifest's "form" say which one ran
Forms = Callable[[str, str], "dict[str, Any]"]
# a released checkpoint's state_dict -> the native network's (e.g. the generator's keys out of a training checkpoint)
CheckpointFilter = Callable[["dict[str, Any]"], "dict[str, Any]"]


@dataclass(frozen=True)
class ResolutionConstraint:
    """Which (H, W) a model accepts: both multiples of ``multiple_of``, at least ``minimum``, square if asked."""

    multiple_of: int
    minimum: int
    square: bool = False
    why: str = ""

    def check(self, height: int, width: int) -> None:
        """Raise :class:`UnsupportedResolutionError` with a one-line reason if (height, width) is not accepted."""
        problems = []
        if height % self.multiple_of or width % self.multiple_of:
            problems.append(f"height and width must be multiples of {self.multiple_of}")
        if min(height, width) < self.minimum:
            problems.append(f"at least {self.minimum}")
        if self.square and height != width:
            problems.append("square")
        if problems:
            reason = f" ({self.why})" if self.why else ""
            raise UnsupportedResolutionError(
                f"resolution {height}x{width} is not supported: {', '.join(problems)}{reason}"
            )


@dataclass(frozen=True)
class ModelSpec:
    """Everything rbench knows about a registered model besides its weights."""

    name: str
    factory: Callable[..., nn.Module]
    summary: str
    constraint: ResolutionConstraint
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})
    paper_key: str | None = None
    sweep_variants: tuple[str, ...] | None = None
    limits: Limits | None = None
    forms: Forms | None = None
    in_default_sweep: bool = True  # measured by a bare `rbench run` (the RETHINED paper's models); else by name/all
    checkpoint_filter: CheckpointFilter | None = None
    source: str = "built-in"  # or the user's import path / entry point (models/user.py)

    def unsupported(self, variant: str, target: str, device: str | None = None) -> str | None:
        """Why this model cannot go to ``target`` (on ``device``), as the model itself declares; ``None`` if it can.

        Such a cell is stored as ``unsupported`` without spending an export, a device build or a cloud job (the
        paper's "-" in Table 2).
        """
        return self.limits(variant, target, device) if self.limits else None

    def form_options(self, variant: str, target: str) -> dict[str, Any]:
        """Factory options that select the form ``target`` gets (``{}``: the model has one form)."""
        return dict(self.forms(variant, target)) if self.forms else {}

    @property
    def benchmark_variants(self) -> tuple[str, ...]:
        """Variants ``rbench run`` measures by default: all, unless some only run with host-side steps."""
        return self.sweep_variants or tuple(self.variants)

    @property
    def default_variant(self) -> str:
        return next(iter(self.variants))

    @property
    def paper_claims(self) -> dict[str, Any]:
        """This model's numbers from the papers' tables (``paper_claims.toml``), keyed by table."""
        return paper_claims_for(self.paper_key) if self.paper_key else {}

    def variant_options(self, variant: str | None) -> dict[str, Any]:
        variant = variant or self.default_variant
        if variant not in self.variants:
            raise UnknownNameError(f"variant of {self.name}", variant, list(self.variants))
        return dict(self.variants[variant])


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    summary: str,
    constraint: ResolutionConstraint,
    variants: dict[str, dict[str, Any]] | None = None,
    paper_key: str | None = None,
    sweep_variants: tuple[str, ...] | None = None,
    limits: Limits | None = None,
    forms: Forms | None = None,
    in_default_sweep: bool = True,
    checkpoint_filter: CheckpointFilter | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``factory(**options) -> nn.Module`` under ``name``. The first variant is the default;
    ``sweep_variants`` limits what ``rbench run`` measures by default (e.g. to exclude a host-side pipeline);
    ``limits(variant, target, device)`` says where the model cannot go (:meth:`ModelSpec.unsupported`);
    ``forms(variant, target)`` gives the factory options of the form exported to a target
    (:meth:`ModelSpec.form_options`); ``in_default_sweep=False`` keeps a bare ``rbench run`` to the RETHINED paper's
    models (the model runs when named, or with ``--model all``); ``checkpoint_filter(state_dict)`` maps a released
    checkpoint to the native network's keys before the strict load (timm's ``checkpoint_filter_fn``)."""

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = ModelSpec(
            name=name,
            factory=factory,
            summary=summary,
            constraint=constraint,
            variants=variants or {"default": {}},
            paper_key=paper_key,
            sweep_variants=sweep_variants,
            limits=limits,
            forms=forms,
            in_default_sweep=in_default_sweep,
            checkpoint_filter=checkpoint_filter,
        )
        return factory

    return decorate


def _ensure_builtin_models() -> None:
    from . import _builtin  # noqa: F401  (imports register the built-in models)


@cache
def _entry_point_models() -> dict[str, ModelSpec]:
    from .user import entry_point_specs

    return entry_point_specs()


def _known() -> dict[str, ModelSpec]:
    """Built-in models, then those other packages register through the ``rbench.models`` entry points."""
    _ensure_builtin_models()
    return _entry_point_models() | _REGISTRY


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names (built-in and entry points) matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _known() if fnmatch.fnmatch(n, pattern))


def sweep_models(selection: list[str] | None) -> list[str]:
    """The models ``rbench run --model ...`` means: those named; ``all`` for every registered one; nothing for the
    default sweep (the registered models marked ``in_default_sweep``)."""
    if not selection:
        return [name for name in list_models() if _known()[name].in_default_sweep]
    if "all" in selection:
        return list_models() + [name for name in selection if name != "all" and name not in _known()]
    return list(selection)


def get_model_spec(name: str) -> ModelSpec:
    """A registered model, or a user's ``module:callable`` (imported on first use)."""
    known = _known()
    if name in known:
        return known[name]
    from .user import is_import_path, load_callable, user_spec

    if not is_import_path(name):
        raise UnknownNameError("model", name, list(known))
    _REGISTRY[name] = user_spec(name, load_callable(name), f"import path {name}")
    return _REGISTRY[name]


def create_model(
    name: str,
    variant: str | None = None,
    *,
    seed: int = 0,
    weights: str | Path | None = None,
    **options: Any,
) -> nn.Module:
    """Build the pipeline module of a registered model, in eval mode.

    Weights are seeded random (``seed``) unless ``weights`` names a checkpoint, loaded with ``weights_only=True``
    and ``strict=True`` into the model's native network (``.net`` where the model has one).
    """
    spec = get_model_spec(name)
    kwargs = spec.variant_options(variant) | options
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.factory(**kwargs)
    if weights is not None:
        load_weights(model, weights, spec.checkpoint_filter)
    return model.eval()


def load_weights(model: nn.Module, path: str | Path, checkpoint_filter: CheckpointFilter | None = None) -> None:
    """Load a released checkpoint strictly into ``model.net`` (or ``model``), through the model's
    ``checkpoint_filter`` if it has one; clear one-line errors on mismatch."""
    path = Path(path)
    if not path.is_file():
        raise RbenchError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise RbenchError(f"cannot read weights {path}: {str(exc).splitlines()[0]}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if checkpoint_filter is not None:
        state = checkpoint_filter(state)
    target = getattr(model, "net", model)
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise RbenchError(f"weights {path} do not match the model: {first}") from exc


@cache
def _paper_claims() -> dict[str, Any]:
    text = resources.files("rethined_bench.data").joinpath("paper_claims.toml").read_text()
    return tomllib.loads(text)


def paper_claims() -> dict[str, Any]:
    """All of ``paper_claims.toml``: the source papers' tables as data."""
    return _paper_claims()


def paper_claims_for(key: str) -> dict[str, Any]:
    """One model's rows from the RETHINED paper's tables: ``{"table2": {device: {...}}, "table3": {...}}``."""
    rethined = _paper_claims()["rethined"]
    out: dict[str, Any] = {}
    table2 = {dev: row[key] for dev, row in rethined["table2"]["devices"].items() if key in row}
    if table2:
        out["table2"] = table2
    if key in rethined["table3"]:
        out["table3"] = rethined["table3"][key]
    if key in rethined["table1"]:
        out["table1_time_ms"] = rethined["table1"][key]["time"]
    return out
