"""Log lines: JSON or plain, extra fields, secrets masked."""

from __future__ import annotations

import json
import logging

import pytest

from streamrec.ops.logs import JsonFormatter, PlainFormatter, redact, setup_logging


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("streamrec.worker.loop", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "db postgresql+psycopg://app:s3cr3t@db:5432/rec down",
            "db postgresql+psycopg://app:***@db:5432/rec down",
        ),
        ("sasl_plain_password='hunter2', user=x", "sasl_plain_password='***', user=x"),
        ('{"password": "p@ss"}', '{"password": "***"}'),
        ("postgresql://app@db/rec", "postgresql://app@db/rec"),
        ("http://host:9108/metrics", "http://host:9108/metrics"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_given_secret_values() -> None:
    assert redact("token is abc123xyz", ["abc123xyz"]) == "token is ***"


def test_json_line_has_fields_and_masks_secrets() -> None:
    line = JsonFormatter(secrets=["topsecret"]).format(
        _record(
            "connecting to %s with %s",
            "postgresql://u:pw@h/db",
            "topsecret",
            partition=3,
            records=200,
        )
    )
    obj = json.loads(line)
    assert obj["level"] == "INFO" and obj["logger"] == "streamrec.worker.loop"
    assert obj["msg"] == "connecting to postgresql://u:***@h/db with ***"
    assert obj["partition"] == 3 and obj["records"] == 200
    assert obj["ts"].endswith("Z")
    assert "pw" not in line and "topsecret" not in line


def test_json_exception_is_one_line_and_masked() -> None:
    try:
        raise RuntimeError("cannot connect to postgresql://u:pw@h/db")
    except RuntimeError:
        import sys

        record = _record("store failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "u:***@h" in json.loads(line)["exc"] and ":pw@" not in line


def test_plain_line_appends_extra_fields() -> None:
    line = PlainFormatter().format(_record("batch committed", records=5))
    assert line.endswith("streamrec.worker.loop: batch committed records=5")


def test_setup_logging_installs_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", json_lines=True, secrets=["sekrit"])
        setup_logging("INFO", json_lines=True, secrets=["sekrit"])
        assert len(root.handlers) == 1
        logging.getLogger("streamrec.test").info("password is sekrit")
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert json.loads(err[0])["msg"] == "password is ***"
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
