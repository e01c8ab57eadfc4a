"""Skip on a bare laptop, fail in CI: a test that needs torch or PostgreSQL never hides in CI.

``make test`` on a machine without torch or a PostgreSQL server skips those tests and says
why; with ``CI=true`` (as ``.ci/run`` runs) the same absence fails the run.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the run is CI's (``CI=true``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it in CI."""
    if in_ci():
        pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
    pytest.skip(reason)


def require_module(name: str) -> ModuleType:
    """Import ``name``, or skip (fail in CI) saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"{name} is not installed (pip install -e '.[train,dev]')")
