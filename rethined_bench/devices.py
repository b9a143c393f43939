"""Device profiles: one TOML file per device (``device_profiles/*.toml``), validated on load.

A profile says which exporter makes the device's artifacts (``target``, ``precision``), how rbench reaches it
(``runner`` + ``[connection]``), what constrains the export and the run (``[toolchain]``), its roofline ceilings
with their sources (``[ceilings]``) and the paper's Table 2 numbers for it (``[paper.table2]``). ``[connection]``
and ``[toolchain]`` are validated against the settings dataclasses the runner and the exporter declare
(:mod:`rethined_bench.settings`; ``RBENCH_<DEVICE>_<KEY>`` environment variables override them). User profiles
come from ``--profiles DIR`` or ``RBENCH_PROFILES`` and override the built-in ones of the same name.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import backends, settings
from .errors import RbenchError, UnknownNameError

PRECISIONS = ("fp32", "fp16", "int8")
# facts about the device that no backend reads: shown in reports and `rbench devices`
DEVICE_FACTS = ("os", "chip", "jetpack", "cuda")

_TOP: dict[str, tuple[type, ...]] = {"name": (str,), "display": (str,), "vendor": (str,), "target": (str,),
                                     "precision": (str,), "runner": (str,), "notes": (str,)}
_CEILINGS: dict[str, tuple[type, ...]] = {"fp32_gflops": (int, float), "fp16_gflops": (int, float),
                                          "int8_gops": (int, float), "mem_gbps": (int, float),
                                          "measure_at_runtime": (bool,), "source": (str,)}
_SECTIONS = ("connection", "toolchain", "ceilings", "paper")
_REQUIRED = ("name", "display", "vendor", "target", "precision", "runner")
_PAPER_FIELDS = {"latency": (int, float), "load": (int, float)}


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    display: str
    vendor: str
    target: str
    precision: str
    runner: str
    source: Path
    notes: str = ""
    connection: dict[str, Any] = field(default_factory=dict)
    toolchain: dict[str, Any] = field(default_factory=dict)
    ceilings: dict[str, Any] = field(default_factory=dict)
    paper_table2: dict[str, dict[str, float]] = field(default_factory=dict)

    def settings_values(self) -> dict[str, Any]:
        """``[connection]`` and ``[toolchain]`` together: what the backends' settings dataclasses are built from."""
        return self.toolchain | self.connection



def _check_types(path: Path, section: str, table: dict[str, Any], schema: dict[str, tuple[type, ...]]) -> None:
    for key, value in table.items():
        where = f"{section}.{key}" if section else key
        if key not in schema:
            raise RbenchError(f"{path}: unknown key '{where}'; allowed: {', '.join(sorted(schema))}")
        if isinstance(value, bool) and bool not in schema[key] or not isinstance(value, schema[key]):
            wanted = " or ".join(t.__name__ for t in schema[key])
            raise RbenchError(f"{path}: '{where}' must be {wanted}, not {type(value).__name__} ({value!r})")


def _check_backend_settings(path: Path, top: dict[str, Any], sections: dict[str, dict[str, Any]]) -> None:
    """``[connection]`` keys must be the runner's settings; ``[toolchain]`` keys the runner's, the exporter's or a
    device fact; every value of the declared type."""
    runner, exporter = backends.runner_class(top["runner"]), backends.exporter_class(top["target"])
    if runner.target != top["target"]:
        raise RbenchError(f"{path}: runner {top['runner']} runs {runner.target} artifacts, not {top['target']}")
    if top["precision"] not in exporter.precisions:
        raise RbenchError(f"{path}: 'precision' is {top['precision']!r}; target {top['target']} supports "
                          f"{', '.join(exporter.precisions)}")
    owners = {"connection": [runner.settings_class], "toolchain": [runner.settings_class, exporter.settings_class]}
    for section, classes in owners.items():
        table = sections.get(section, {})
        facts = DEVICE_FACTS if section == "toolchain" else ()
        unknown = [key for key in settings.unknown_keys(table, classes) if key not in facts]
        if unknown:
            allowed = sorted({key for cls in classes for key in settings.profile_keys(cls)} | set(facts))
            raise RbenchError(f"{path}: unknown key '{section}.{unknown[0]}' for runner {top['runner']} and target "
                              f"{top['target']}; allowed: {', '.join(allowed) or 'none'}")
    values = {key: value for section in owners for key, value in sections.get(section, {}).items()}
    labels = {key: f"{section}.{key}" for section in owners for key in sections.get(section, {})}
    for cls in (runner.settings_class, exporter.settings_class):  # types, and values the dataclasses refuse
        settings.build(cls, values, source=str(path), labels=labels)


def parse_profile(path: Path, text: str | None = None) -> DeviceProfile:
    """Parse and validate one profile; every error names the file and the key."""
    try:
        data = tomllib.loads(text if text is not None else path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RbenchError(f"{path}: invalid TOML ({exc})") from exc
    sections = {k: v for k, v in data.items() if isinstance(v, dict)}
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for section in sections:
        if section not in _SECTIONS:
            raise RbenchError(f"{path}: unknown section [{section}]; allowed: {', '.join(_SECTIONS)}")
    _check_types(path, "", top, _TOP)
    for key in _REQUIRED:
        if key not in top:
            raise RbenchError(f"{path}: missing required key '{key}'")
    for key, allowed in (("runner", tuple(backends.RUNNERS)), ("target", tuple(backends.EXPORTERS)),
                         ("precision", PRECISIONS)):
        if top[key] not in allowed:
            raise RbenchError(f"{path}: '{key}' is {top[key]!r}; allowed: {', '.join(allowed)}")
    _check_types(path, "ceilings", sections.get("ceilings", {}), _CEILINGS)
    _check_backend_settings(path, top, sections)
    paper = _parse_paper(path, sections.get("paper", {}))
    return DeviceProfile(source=path, connection=sections.get("connection", {}),
                         toolchain=sections.get("toolchain", {}), ceilings=sections.get("ceilings", {}),
                         paper_table2=paper, **top)


def _parse_paper(path: Path, paper: dict[str, Any]) -> dict[str, dict[str, float]]:
    extra = set(paper) - {"table2"}
    if extra:
        raise RbenchError(f"{path}: unknown key 'paper.{sorted(extra)[0]}'; allowed: paper.table2")
    table2 = paper.get("table2", {})
    for model, row in table2.items():
        if not isinstance(row, dict):
            raise RbenchError(f"{path}: 'paper.table2.{model}' must be a table like {{ latency = 1.0, load = 2.0 }}")
        for key, value in row.items():
            if key not in _PAPER_FIELDS:
                raise RbenchError(f"{path}: unknown key 'paper.table2.{model}.{key}'; allowed: latency, load")
            if isinstance(value, bool) or not isinstance(value, _PAPER_FIELDS[key]):
                raise RbenchError(f"{path}: 'paper.table2.{model}.{key}' must be a number (ms)")
    return table2


def _builtin_profiles() -> list[tuple[Path, str]]:
    root = resources.files("rethined_bench.device_profiles")
    return [(Path(str(entry)), entry.read_text()) for entry in sorted(root.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".toml")]


def load_profiles(extra_dir: str | Path | None = None) -> dict[str, DeviceProfile]:
    """Built-in profiles, then those in ``extra_dir`` (or ``$RBENCH_PROFILES``), later ones overriding by name."""
    profiles: dict[str, DeviceProfile] = {}
    for path, text in _builtin_profiles():
        profile = parse_profile(path, text)
        profiles[profile.name] = profile
    extra_dir = extra_dir or os.environ.get("RBENCH_PROFILES")
    if extra_dir:
        directory = Path(extra_dir)
        if not directory.is_dir():
            raise RbenchError(f"profiles directory not found: {directory}")
        for path in sorted(directory.glob("*.toml")):
            profile = parse_profile(path)
            profiles[profile.name] = profile
    return profiles


def get_profile(name: str, extra_dir: str | Path | None = None) -> DeviceProfile:
    profiles = load_profiles(extra_dir)
    if name not in profiles:
        raise UnknownNameError("device", name, list(profiles))
    return profiles[name]
