"""Importing this module registers the built-in models."""

from . import coordfill, hifill, in2, lama, migan, rethined, wavepaint  # noqa: F401
