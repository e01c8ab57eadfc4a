"""Unit tests see the settings' defaults, never the caller's STREAMREC_* environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("STREAMREC_"):
            monkeypatch.delenv(name)
    yield
