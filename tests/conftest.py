"""Fixtures shared by several test modules (imported here so pytest finds them)."""

from fake_runc import shim_env, short_tmp  # noqa: F401
from shim_rig import rig  # noqa: F401
