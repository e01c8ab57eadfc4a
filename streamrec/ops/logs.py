"""Logging set-up: plain or JSON lines, one line per notable event, secrets masked.

Payloads are never logged anywhere in streamrec. As a second line of defence, every formatted
line (message, extra fields and tracebacks) goes through ``redact``: passwords in URLs
(``postgresql://user:secret@host``), ``password=...`` style pairs and any secret value handed to
``setup_logging`` are replaced by ``***``.

Structured fields: ``log.info("batch committed", extra={"records": 200, "partition": 3})``
adds ``"records": 200, "partition": 3`` to the JSON object (and ``records=200 partition=3`` to
a plain line).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

MASK = "***"
# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^@\s]+(?=@)")
# password=..., "password": "...", sasl_plain_password='...'
_KEY_VALUE = re.compile(
    r"(?P<head>(?:password|passwd|secret|token|api_key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}]+",
    re.IGNORECASE,
)
# attributes every LogRecord has; anything else on a record came in through ``extra``
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask URL passwords, ``password=...`` pairs and the given secret values in ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _KEY_VALUE.sub(lambda m: m.group("head") + MASK, text)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Fields passed with ``extra=`` (not the LogRecord's own attributes)."""
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc when present."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(obj, default=str), self.secrets)


class PlainFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` with secrets masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if fields:
            first, nl, rest = line.partition("\n")
            pairs = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{first} {pairs}{nl}{rest}"
        return redact(line, self.secrets)


def setup_logging(
    level: str = "INFO", json_lines: bool = False, secrets: Iterable[str] = ()
) -> None:
    """Configure the root logger once (stderr).

    Args:
        level: root level name.
        json_lines: one JSON object per line instead of plain text.
        secrets: values to mask wherever they appear (e.g. the SASL password).
    """
    handler = logging.StreamHandler(sys.stderr)
    secrets = tuple(secrets)
    handler.setFormatter(JsonFormatter(secrets) if json_lines else PlainFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("alembic").setLevel(logging.WARNING)
