"""The user's own models: ``--model my_pkg.models:build_net`` (an import path) or a name another package registers
through the ``rbench.models`` entry-point group.

The callable returns an ``nn.Module`` with rbench's pipeline contract (``forward(image, mask)``, mask 1 = hole,
output in [0, 1] at the input's size), optionally taking keyword options (``--option width=64``). It may declare the
sizes it accepts with an attribute of the callable, ``rbench_resolution = {"multiple_of": 8, "minimum": 64}``
(:class:`ResolutionConstraint` fields); undeclared, every size is tried, and a size the model cannot take is one
clear error where it fails. Nothing else is asked of it: the deploy transforms find its
Conv+BatchNorm pairs and re-parameterisable blocks themselves (:mod:`rethined_bench.optimize`).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import RbenchError
from .registry import ModelSpec, ResolutionConstraint

ENTRY_POINT_GROUP = "rbench.models"
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
UNDECLARED = ResolutionConstraint(1, 1, why="the model declares no rbench_resolution: sizes are tried")
RESOLUTION_ATTRIBUTE = "rbench_resolution"


def is_import_path(name: str) -> bool:
    """Whether a model name is ``module:callable`` rather than a registered name."""
    return bool(IMPORT_PATH.match(name))


def load_callable(path: str) -> Callable[..., nn.Module]:
    """Import ``module:attr.attr``; one-line errors for a module or attribute that is not there."""
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RbenchError(f"cannot import {module_name} for model {path}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise RbenchError(f"model {path}: {module_name} has no attribute {attribute}")
        target = getattr(target, part)
    if not callable(target):
        raise RbenchError(f"model {path} is not callable (it must return an nn.Module)")
    return target


def declared_constraint(source: Any) -> ResolutionConstraint | None:
    """The sizes the callable ``source`` declares through ``rbench_resolution``, if it does."""
    declared = getattr(source, RESOLUTION_ATTRIBUTE, None)
    if declared is None:
        return None
    if isinstance(declared, ResolutionConstraint):
        return declared
    try:
        return ResolutionConstraint(**declared)
    except TypeError as exc:
        raise RbenchError(f"{RESOLUTION_ATTRIBUTE} must name multiple_of, minimum (and square, why): {exc}") from exc


def user_spec(name: str, factory: Callable[..., nn.Module], source: str) -> ModelSpec:
    """A :class:`ModelSpec` for a user callable: one variant, its docstring as the summary."""
    doc = (inspect.getdoc(factory) or "").strip().splitlines()
    return ModelSpec(name=name, factory=_checked(name, factory), summary=doc[0] if doc else f"user model ({source})",
                     constraint=declared_constraint(factory) or UNDECLARED, source=source)


def _checked(name: str, factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``factory`` whose result must be an ``nn.Module`` and whose unknown options are one line."""

    def build(**options: Any) -> nn.Module:
        try:
            model = factory(**options)
        except TypeError as exc:
            if options and "argument" in str(exc):
                raise RbenchError(f"model {name} does not take options {sorted(options)}: {exc}") from exc
            raise
        if not isinstance(model, nn.Module):
            raise RbenchError(f"model {name} returned {type(model).__name__}, not an nn.Module")
        return model

    build.__module__ = factory.__module__  # the code fingerprint follows the user's module
    build.__wrapped__ = factory  # type: ignore[attr-defined]
    return build


def entry_point_specs() -> dict[str, ModelSpec]:
    """Models other packages register under the ``rbench.models`` entry-point group, by entry-point name."""
    specs = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {entry.value} ({entry.dist.name if entry.dist else 'unknown package'})"
        specs[entry.name] = user_spec(entry.name, load_callable(entry.value), source)
    return specs


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["width=64", "name=tiny", "flag=true"]`` → keyword options, values read as Python literals where they
    are one (``true``/``false`` too), else kept as strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise RbenchError(f"--option must be key=value with a Python identifier as key, not {pair!r}")
        lowered = {"true": "True", "false": "False", "none": "None"}.get(text.lower(), text)
        try:
            options[key] = ast.literal_eval(lowered)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def option_variant(name: str, options: dict[str, Any]) -> str:
    """Make ``options`` a variant of the user model ``name`` (labelled ``width=64,depth=2``) and return its label:
    the variant is part of every artifact name and result cell, so runs with other options never mix."""
    from .registry import _REGISTRY, get_model_spec

    spec = get_model_spec(name)
    if spec.source == "built-in":
        raise RbenchError(f"--option is for user models; {name} has variants: {', '.join(spec.variants)}")
    if not options:
        return spec.default_variant
    label = ",".join(f"{key}={value}" for key, value in sorted(options.items()))
    _REGISTRY[name] = dataclasses.replace(spec, variants=spec.variants | {label: dict(options)})
    return label
