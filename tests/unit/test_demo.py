"""The demo's --duration counts seconds of traffic, not seconds since the process started."""

from __future__ import annotations

import threading
import time

import pytest
from click.testing import CliRunner

import streamrec.cli
import streamrec.demo
from streamrec.cli import cli
from streamrec.demo import DemoOptions, wait_for_end


def test_wait_for_end_counts_the_duration_from_the_call_and_sets_stop() -> None:
    stop = threading.Event()
    time.sleep(0.1)  # time spent before the call (training, broker start-up) does not count
    start = time.monotonic()
    wait_for_end(stop, 0.2)
    assert time.monotonic() - start >= 0.2
    assert stop.is_set()


def test_wait_for_end_returns_at_once_when_stopped_and_waits_without_a_duration() -> None:
    stop = threading.Event()
    stop.set()
    start = time.monotonic()
    wait_for_end(stop, 60.0)
    assert time.monotonic() - start < 5.0
    stop = threading.Event()
    timer = threading.Timer(0.1, stop.set)  # Ctrl-C, with no duration given
    timer.start()
    wait_for_end(stop, 0.0)
    timer.join()
    assert stop.is_set()


def test_the_demo_command_starts_no_clock_before_the_demo_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, object] = {}

    def fake_run_demo(opts: DemoOptions, stop: threading.Event) -> None:
        time.sleep(0.3)  # "training" longer than the duration
        seen["duration"] = opts.duration
        seen["stopped_while_training"] = stop.is_set()

    monkeypatch.setattr(streamrec.demo, "run_demo", fake_run_demo)
    monkeypatch.setattr(streamrec.cli, "install_stop_handlers", lambda stop: None)
    monkeypatch.setattr(streamrec.cli, "setup_logging", lambda level: None)
    result = CliRunner().invoke(cli, ["demo", "--duration", "0.1"])
    assert result.exit_code == 0, result.output
    assert seen == {"duration": 0.1, "stopped_while_training": False}


def test_the_demo_help_says_when_the_duration_starts() -> None:
    result = CliRunner().invoke(cli, ["demo", "--help"])
    assert result.exit_code == 0
    assert "seconds of traffic" in " ".join(result.output.split())
