"""Fixtures shared by several test modules (imported here so pytest finds them)."""

from shim_rig import rig  # noqa: F401
