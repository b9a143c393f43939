"""Importing this module registers the built-in models."""

from . import rethined  # noqa: F401
