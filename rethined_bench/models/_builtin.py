"""Importing this module registers the built-in models."""

from . import migan, rethined  # noqa: F401
