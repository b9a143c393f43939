"""Where a number came from: rbench's version, git sha and a fingerprint of the code that shapes artifacts."""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

from . import __version__

TOOL_PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "onnxsim", "onnxscript", "coremltools", "fvcore",
                 "tensorrt", "qai-hub", "rethined-bench")
_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent
# the code that determines an artifact's content: models, deploy transforms and exporters
_FINGERPRINTED = (_PACKAGE_DIR / "models", _PACKAGE_DIR / "optimize", _PACKAGE_DIR / "inputs.py",
                  _REPO_DIR / "exporters")


@cache
def code_fingerprint() -> str:
    """sha256 (16 hex) over the sources that shape an artifact; a change invalidates cached exports."""
    digest = hashlib.sha256(__version__.encode())
    for root in _FINGERPRINTED:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for file in files:
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


@cache
def git_sha() -> str | None:
    """The checkout's commit (with ``-dirty`` if modified), or None outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO_DIR, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO_DIR,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def tool_versions() -> dict[str, str]:
    """Installed versions of the toolchain, read from package metadata (no heavy imports)."""
    versions = {}
    for package in TOOL_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
