"""Importing this module registers the built-in runners."""

from . import ort  # noqa: F401
from . import coreml  # noqa: F401
