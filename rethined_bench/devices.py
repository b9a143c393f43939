"""Device profiles: one TOML file per device (``device_profiles/*.toml``), validated on load.

A profile says which exporter makes the device's artifacts (``target``, ``precision``), how rbench reaches it
(``runner`` + ``[connection]``, overridable by ``RBENCH_<DEVICE>_<KEY>`` environment variables), what constrains the
export (``[toolchain]``), its roofline ceilings with their sources (``[ceilings]``) and the paper's Table 2 numbers
for it (``[paper.table2]``). User profiles come from ``--profiles DIR`` or ``RBENCH_PROFILES`` and override the
built-in ones of the same name.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import RbenchError, UnknownNameError

RUNNER_KINDS = ("local-ort", "local-torch", "local-coreml", "local-tensorrt", "aihub", "ssh-trtexec")
TARGETS = ("onnx", "coreml", "tensorrt", "qnn")
PRECISIONS = ("fp32", "fp16", "int8")

# section → {key: allowed types}; ``None`` means "any string key with a value of these types"
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "": {"name": (str,), "display": (str,), "vendor": (str,), "target": (str,), "precision": (str,),
         "runner": (str,), "notes": (str,)},
    "connection": {"host": (str,), "user": (str,), "port": (int,), "key_file": (str,), "remote_dir": (str,),
                   "trtexec": (str,), "device_name": (str,), "chipset": (str,), "api_token_env": (str,)},
    "toolchain": {"os": (str,), "chip": (str,), "onnx_opset": (int,), "tensorrt": (str,), "jetpack": (str,),
                  "cuda": (str,), "coreml_deployment_target": (str,), "compute_units": (str,), "qairt": (str,),
                  "runtime": (str,), "threads": (int,), "graph_opt_level": (str,)},
    "ceilings": {"fp32_gflops": (int, float), "fp16_gflops": (int, float), "int8_gops": (int, float),
                 "mem_gbps": (int, float), "measure_at_runtime": (bool,), "source": (str,)},
}
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

    def connection_value(self, key: str) -> Any:
        """A connection setting, with ``RBENCH_<DEVICE>_<KEY>`` (e.g. RBENCH_JETSON_NANO_HOST) taking precedence."""
        env = f"RBENCH_{self.name.upper().replace('-', '_')}_{key.upper()}"
        return os.environ.get(env) or self.connection.get(key)


def _check_section(path: Path, section: str, table: dict[str, Any]) -> None:
    schema = _SCHEMA[section]
    for key, value in table.items():
        where = f"{section}.{key}" if section else key
        if key not in schema:
            raise RbenchError(f"{path}: unknown key '{where}'; allowed: {', '.join(sorted(schema))}")
        if isinstance(value, bool) and bool not in schema[key] or not isinstance(value, schema[key]):
            wanted = " or ".join(t.__name__ for t in schema[key])
            raise RbenchError(f"{path}: '{where}' must be {wanted}, not {type(value).__name__} ({value!r})")


def parse_profile(path: Path, text: str | None = None) -> DeviceProfile:
    """Parse and validate one profile; every error names the file and the key."""
    try:
        data = tomllib.loads(text if text is not None else path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RbenchError(f"{path}: invalid TOML ({exc})") from exc
    sections = {k: v for k, v in data.items() if isinstance(v, dict)}
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for section in sections:
        if section not in _SCHEMA and section != "paper":
            raise RbenchError(f"{path}: unknown section [{section}]; allowed: connection, toolchain, ceilings, paper")
    _check_section(path, "", top)
    for key in _REQUIRED:
        if key not in top:
            raise RbenchError(f"{path}: missing required key '{key}'")
    for key, allowed in (("runner", RUNNER_KINDS), ("target", TARGETS), ("precision", PRECISIONS)):
        if top[key] not in allowed:
            raise RbenchError(f"{path}: '{key}' is {top[key]!r}; allowed: {', '.join(allowed)}")
    for section in ("connection", "toolchain", "ceilings"):
        _check_section(path, section, sections.get(section, {}))
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
