"""Typed backend settings: each runner and exporter declares a frozen dataclass of what it takes.

A device profile's ``[connection]`` and ``[toolchain]`` tables fill these dataclasses, with ``RBENCH_<DEVICE>_<KEY>``
environment variables taking precedence (e.g. ``RBENCH_JETSON_NANO_HOST``). A field is read from the profile key of
its own name unless it declares another (``setting(18, key="onnx_opset")``), so one profile key can feed a runner
and an exporter alike. Validation lives here so that every backend gets the same one-line errors, naming the file
and the key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, TypeVar

from .errors import RbenchError

S = TypeVar("S")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of a backend that takes none."""


def setting(default: Any, *, key: str | None = None, help: str = "") -> Any:
    """A settings field with its default, the profile key it is read from (default: its name) and a help line."""
    return dataclasses.field(default=default, metadata={"key": key, "help": help})


def profile_keys(cls: type) -> dict[str, str]:
    """``{profile key: field name}`` of a settings dataclass."""
    return {(f.metadata.get("key") or f.name): f.name for f in dataclasses.fields(cls)}


def field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """``{field name: accepted types}``, read from the annotations (``int | None`` → ``(int, NoneType)``)."""
    hints = typing.get_type_hints(cls)
    accepted = {}
    for name, hint in hints.items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,)
        accepted[name] = tuple(arg for arg in args if isinstance(arg, type))
    return accepted


def _type_names(accepted: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in accepted if t is not type(None))


def check_value(cls: type, name: str, value: Any, where: str) -> Any:
    """``value`` if it has the field's type (an int is a float too; a bool is never an int), else an error."""
    accepted = field_types(cls)[name]
    if isinstance(value, bool) and bool not in accepted:
        ok = False
    else:
        ok = isinstance(value, accepted) or (float in accepted and isinstance(value, int))
    if not ok:
        raise RbenchError(f"{where} must be {_type_names(accepted)}, not {type(value).__name__} ({value!r})")
    return value


def parse_text(cls: type, name: str, text: str, where: str) -> Any:
    """An environment variable's text converted to the field's type."""
    accepted = field_types(cls)[name]
    if str in accepted:
        return text
    if bool in accepted and text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    for kind in (int, float):
        if kind in accepted:
            try:
                return kind(text)
            except ValueError:
                continue
    raise RbenchError(f"{where} must be {_type_names(accepted)}, not {text!r}")


def unknown_keys(table: dict[str, Any], classes: list[type]) -> list[str]:
    """Keys of a profile table that no settings class in ``classes`` declares."""
    known = set().union(*(profile_keys(cls) for cls in classes)) if classes else set()
    return [key for key in table if key not in known]


def env_name(device: str, key: str) -> str:
    return f"RBENCH_{device.upper().replace('-', '_')}_{key.upper()}"


def build(cls: type[S], values: dict[str, Any], *, source: str, env_device: str | None = None,
          labels: dict[str, str] | None = None) -> S:
    """An instance of the settings dataclass ``cls`` from profile ``values`` (keys it does not declare are ignored:
    the profile was validated against all its backends) and ``RBENCH_<DEVICE>_<KEY>`` overrides. ``labels`` names
    a key in messages (e.g. ``toolchain.threads``)."""
    kwargs = {}
    for key, name in profile_keys(cls).items():
        variable = env_name(env_device, key) if env_device else None
        if variable and os.environ.get(variable):
            kwargs[name] = parse_text(cls, name, os.environ[variable], variable)
        elif key in values:
            kwargs[name] = check_value(cls, name, values[key], f"{source}: '{(labels or {}).get(key, key)}'")
    try:
        return cls(**kwargs)
    except RbenchError as exc:  # a value the dataclass itself refuses (e.g. an unknown optimisation level)
        raise RbenchError(f"{source}: {exc}") from exc

