"""Importing this module registers the built-in models."""

from . import coordfill, lama, migan, rethined, wavepaint  # noqa: F401
