"""Interaction files -> per-user item sequences (torch-free, reusable by serving tools).

Two formats are read; the format is detected per file from its first non-blank line:

* **Whitespace-separated** ``user item [rating] [timestamp]`` lines (MovieLens ``u.data``; the
  ``user item`` files of the SASRec papers). Three fields mean ``user item rating``; the timestamp
  is only present with four fields. Every line of a file must agree on whether it has a
  timestamp. Ratings are checked to be numbers and otherwise ignored: every interaction counts.
* **JSON lines** of our events ``{"event_id": str, "user_id": str, "item_id": str,
  "type": "click"|"purchase", "ts": int}``. A repeated ``event_id`` is skipped (the topic
  delivers at least once; the first copy wins).

Each user's events are ordered by timestamp, ties by file order; without timestamps file order
is time order. Blank lines are skipped. A malformed line raises :class:`DataError` naming the
file and the 1-based line number. Ids are opaque strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamrec.errors import StreamrecError

EVENT_TYPES = frozenset({"click", "purchase"})
JSON_FIELDS = {"event_id": str, "user_id": str, "item_id": str, "type": str, "ts": int}


class DataError(StreamrecError, ValueError):
    """An interaction file is missing, empty or has a malformed line."""


@dataclass(frozen=True)
class Interaction:
    """One user-item interaction.

    Attributes:
        user: opaque user id.
        item: opaque item id.
        ts: timestamp (any monotone unit), or None when the file has none.
        line: 1-based line number in the file (ties are broken by it).
    """

    user: str
    item: str
    ts: float | None
    line: int


def _is_json_file(lines: list[str]) -> bool:
    for text in lines:
        if text.strip():
            return text.lstrip().startswith("{")
    return False


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {what} {text!r} is not finite")
    return value


def _parse_whitespace(lines: list[str], name: str) -> Iterator[Interaction]:
    has_ts: bool | None = None
    for number, text in enumerate(lines, start=1):
        fields = text.split()
        if not fields:
            continue
        where = f"{name}:{number}"
        if not 2 <= len(fields) <= 4:
            raise DataError(
                f"{where}: expected 'user item [rating] [timestamp]', got {len(fields)} fields"
            )
        line_has_ts = len(fields) == 4
        if has_ts is None:
            has_ts = line_has_ts
        elif has_ts != line_has_ts:
            raise DataError(f"{where}: some lines have a timestamp and others do not")
        if len(fields) >= 3:
            _number(fields[2], "rating", where)
        ts = _number(fields[3], "timestamp", where) if line_has_ts else None
        yield Interaction(user=fields[0], item=fields[1], ts=ts, line=number)


def _parse_json(lines: list[str], name: str) -> Iterator[Interaction]:
    seen: set[str] = set()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object")
        for key, kind in JSON_FIELDS.items():
            value = record.get(key)
            # bool is an int subclass; a boolean timestamp is a mistake.
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DataError(f"{where}: field {key!r} missing or not {kind.__name__}")
        if record["type"] not in EVENT_TYPES:
            raise DataError(f"{where}: type must be one of {sorted(EVENT_TYPES)}")
        if record["event_id"] in seen:
            continue
        seen.add(record["event_id"])
        yield Interaction(record["user_id"], record["item_id"], float(record["ts"]), number)


def read_interactions(path: str | Path) -> list[Interaction]:
    """Read every interaction of a file, in file order.

    Args:
        path: a whitespace-separated or JSON-lines file (detected from its first non-blank line).

    Returns:
        The interactions in file order.

    Raises:
        DataError: the file is missing, unreadable, empty or has a malformed line.
    """
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {source}: {exc}") from exc
    parse = _parse_json if _is_json_file(lines) else _parse_whitespace
    records = list(parse(lines, str(source)))
    if not records:
        raise DataError(f"{source} holds no interactions")
    return records


def to_sequences(interactions: list[Interaction]) -> dict[str, list[str]]:
    """Group interactions by user, each user's items ordered by time (ties by file order).

    Users appear in order of their first interaction in the file.
    """
    ordered = sorted(interactions, key=lambda r: (r.ts if r.ts is not None else 0.0, r.line))
    first_seen: dict[str, int] = {}
    for record in interactions:
        first_seen.setdefault(record.user, record.line)
    sequences: dict[str, list[str]] = {user: [] for user in first_seen}
    for record in ordered:
        sequences[record.user].append(record.item)
    return sequences


def read_sequences(path: str | Path) -> dict[str, list[str]]:
    """Read a file into per-user item sequences, oldest first (see :func:`to_sequences`)."""
    return to_sequences(read_interactions(path))


def item_catalog(sequences: dict[str, list[str]]) -> list[str]:
    """Every distinct item id, in order of first appearance (deterministic)."""
    return list(dict.fromkeys(item for seq in sequences.values() for item in seq))


def training_sequences(sequences: dict[str, list[str]], holdout: int) -> dict[str, list[str]]:
    """Drop each user's last ``holdout`` events.

    Users with fewer than ``holdout + 1`` events are never evaluated, so they keep their whole
    sequence (as in the SASRec paper's split).

    Raises:
        DataError: ``holdout`` is negative.
    """
    if holdout < 0:
        raise DataError(f"holdout must be >= 0, got {holdout}")
    if holdout == 0:
        return {user: list(seq) for user, seq in sequences.items()}
    return {
        user: list(seq[:-holdout]) if len(seq) > holdout else list(seq)
        for user, seq in sequences.items()
    }


def holdout_cases(
    sequences: dict[str, list[str]], cut: int, min_events: int = 3
) -> list[tuple[str, list[str], str]]:
    """``(user, history, target)`` with target ``seq[-cut]`` and history ``seq[:-cut]``.

    Users with fewer than ``max(min_events, cut + 1)`` events are skipped.
    """
    if cut < 1:
        raise DataError(f"cut must be >= 1, got {cut}")
    need = max(min_events, cut + 1)
    return [
        (user, list(seq[:-cut]), seq[-cut]) for user, seq in sequences.items() if len(seq) >= need
    ]


def leave_one_out(
    sequences: dict[str, list[str]], split: str, min_events: int = 3
) -> list[tuple[str, list[str], str]]:
    """Evaluation cases of the leave-one-out protocol.

    Args:
        sequences: full per-user sequences.
        split: ``"valid"`` (target = second-last event, history = events before it) or
            ``"test"`` (target = last event, history includes the validation event).
        min_events: users with fewer events are skipped.

    Returns:
        ``(user, history, target)`` triples, in user order.

    Raises:
        DataError: unknown split.
    """
    if split not in ("valid", "test"):
        raise DataError(f"split must be 'valid' or 'test', got {split!r}")
    return holdout_cases(sequences, 2 if split == "valid" else 1, min_events)
