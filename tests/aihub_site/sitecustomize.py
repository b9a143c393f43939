"""Puts every Python process started with ``RBENCH_TEST_AIHUB_STATE`` set on the offline AI Hub of the tests.

Tests start subprocesses (e.g. the ``rbench`` CLI) with ``FakeHub.subprocess_env()``: this directory on
``PYTHONPATH``, so Python imports this module at start-up, and ``RBENCH_TEST_AIHUB_STATE`` naming the state file
of the test's fake, which this process then shares. Without the variable nothing happens.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def _install_fake_aihub(state_path: str) -> None:
    """Load ``tests/fake_aihub.py`` by its path (``tests/`` stays off ``sys.path``) and install it."""
    spec = importlib.util.spec_from_file_location("fake_aihub", Path(__file__).resolve().parents[1] / "fake_aihub.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.install(state_path)


if os.environ.get("RBENCH_TEST_AIHUB_STATE"):
    _install_fake_aihub(os.environ["RBENCH_TEST_AIHUB_STATE"])
