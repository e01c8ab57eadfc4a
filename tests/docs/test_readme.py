"""The README documents every setting and every metric the code defines."""

from __future__ import annotations

from pathlib import Path

from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [
        name for name in Settings.model_fields if f"`STREAMREC_{name.upper()}`" not in README
    ]
    assert not missing, f"settings not documented in README.md: {missing}"


def test_every_metric_is_in_the_metrics_table() -> None:
    metrics = Metrics()
    names = {family.name for family in metrics.registry.collect()}
    missing = []
    for name in names:
        documented = (name, f"{name}_total", f"{name}_info")
        if not any(f"`{n}`" in README for n in documented):
            missing.append(name)
    assert not missing, f"metrics not documented in README.md: {missing}"


def test_readme_promises_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
