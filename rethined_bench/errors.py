"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RbenchError(Exception):
    """An error the user can fix (bad argument, missing dependency, unreachable device, corrupt artifact)."""

    exit_code = 2


def read_json(path: Path, *, missing: str, fix: str = "") -> Any:
    """Parse a JSON file the user pointed rbench at: a missing or unparsable file is an RbenchError, not a traceback.

    ``missing`` is the whole message for an absent file; ``fix`` is appended to the invalid-JSON message.
    """
    if not path.is_file():
        raise RbenchError(missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RbenchError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}){fix}") from exc


class UnknownNameError(RbenchError):
    """An unknown model, variant, device or target name."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        super().__init__(f"unknown {kind} '{name}'; choose one of: {', '.join(sorted(choices))}")


class UnsupportedResolutionError(RbenchError):
    """The model cannot take this input size."""


class UnsupportedExportError(RbenchError):
    """A converter refuses the model for this target (stored as an ``unsupported`` cell, like the paper's "-")."""


class MissingDependencyError(RbenchError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed; install it with: pip install 'rethined-bench[{extra}]'")


class DeployMismatchError(RuntimeError):
    """The deploy (inference) form does not reproduce the train-time form: a bug, not a user error."""


class ParityError(RuntimeError):
    """An exported artifact does not reproduce the PyTorch fp32 reference within tolerance."""
