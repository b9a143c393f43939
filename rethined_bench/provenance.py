"""Where a number came from: rbench's version, git sha and a fingerprint of the code that shapes artifacts."""

from __future__ import annotations

import hashlib
import re
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

from . import __version__

TOOL_PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "onnxsim", "onnxscript", "coremltools", "fvcore",
                 "tensorrt", "qai-hub", "rethined-bench")
_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent
_OWN_PACKAGES = ("rethined_bench", "exporters")


def _source_of(module: str) -> Path | None:
    """The source file of one of rbench's own modules (a package's ``__init__.py``), else ``None``."""
    if module.split(".")[0] not in _OWN_PACKAGES:
        return None
    base = _REPO_DIR.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


_IMPORT = re.compile(r"^import\s+([\w., ]+)", re.MULTILINE)
_FROM_IMPORT = re.compile(r"^from\s+(\.*)([\w.]*)\s+import\s+(\([^)]*\)|[^\n]*)", re.MULTILINE)


def imports_in(text: str) -> list[tuple[int, str, list[str]]]:
    """``(level, module, names)`` of every import statement at the top level of ``text`` (unindented lines): what
    a module imports when it is imported. Imports inside functions, like the model registry's lazy ``_builtin``,
    are indented and do not count. Text, not ``ast``: CPython 3.11's AST constructor can fail spuriously
    ("recursion depth mismatch") after other threads have used it."""
    found = [(0, name.strip().split(" as ")[0], []) for match in _IMPORT.finditer(text)
             for name in match.group(1).split(",") if name.strip()]
    for match in _FROM_IMPORT.finditer(text):
        names = [n.strip().split(" as ")[0] for n in match.group(3).strip("()").split("#")[0].split(",")]
        found.append((len(match.group(1)), match.group(2), [n for n in names if n and n.isidentifier()]))
    return found


def _imported_modules(module: str, source: Path) -> set[str]:
    """Modules that ``module`` imports at import time, resolved to absolute names (``from . import layers``
    counts ``layers`` as a module too)."""
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for level, name, names in imports_in(source.read_text()):
        if level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - level + 1])
            origin = f"{base}.{name}" if name else base
        else:
            origin = name
        found.add(origin)
        found.update(f"{origin}.{alias}" for alias in names)
    return found


def module_closure(*modules: str) -> list[Path]:
    """Source files of ``modules`` and of every rbench module they import at import time, transitively."""
    seen: dict[str, Path] = {}
    pending = list(modules)
    while pending:
        module = pending.pop()
        source = _source_of(module)
        if module in seen or source is None:
            continue
        seen[module] = source
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        pending += parents + sorted(_imported_modules(module, source))
    return sorted(set(seen.values()))


@cache
def code_fingerprint(*modules: str) -> str:
    """sha256 (16 hex) over the sources that shape an artifact: ``modules`` (a model's module and a target's
    exporter module) and what they import, so an edit to one model or one target invalidates only its artifacts."""
    digest = hashlib.sha256(__version__.encode())
    for file in module_closure(*modules):
        digest.update(str(file.relative_to(_REPO_DIR)).encode())
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
