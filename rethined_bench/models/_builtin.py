"""Importing this module registers the built-in models."""

from . import coordfill, migan, rethined  # noqa: F401
