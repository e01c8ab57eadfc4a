"""The worker's ranking defaults are what benchmarks/tune.py chose on its validation window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrec.ops.settings import Settings

TUNE = Path(__file__).resolve().parents[2] / "benchmarks" / "tune.json"


def test_ranking_defaults_are_the_tuned_values() -> None:
    if not TUNE.is_file():
        pytest.skip("benchmarks/tune.json not written yet (make tune)")
    chosen = json.loads(TUNE.read_text())["chosen_settings"]
    defaults = {name: Settings.model_fields[name].default for name in chosen}
    assert defaults == chosen, "re-run `make tune` or update the defaults in streamrec/config.py"
