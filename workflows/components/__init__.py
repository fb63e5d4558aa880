"""Importing this package registers every built-in component."""

from workflows.components import builtin, call, http  # noqa: F401
