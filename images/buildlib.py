"""images/build as an importable module, for the image builders beside it (its OCI packing)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def load_build() -> ModuleType:
    """images/build (a script without .py) loaded as the module ``images_build``."""
    loader = importlib.machinery.SourceFileLoader("images_build", str(HERE / "build"))
    spec = importlib.util.spec_from_loader("images_build", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["images_build"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module
