"""Readers of interaction files: both formats, ordering, errors with line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrec.training.data import (
    DataError,
    holdout_cases,
    item_catalog,
    leave_one_out,
    read_interactions,
    read_sequences,
    training_sequences,
)


def _write(tmp_path: Path, text: str, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _event(eid: str, user: str, item: str, ts: int, kind: str = "click") -> str:
    return json.dumps({"event_id": eid, "user_id": user, "item_id": item, "type": kind, "ts": ts})


def test_movielens_format_orders_by_timestamp_ties_by_file_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "1\t10\t5\t300\n1\t11\t3\t100\n2\t10\t1\t50\n\n1\t12\t4\t200\n1\t13\t2\t200\n",
    )
    assert read_sequences(path) == {"1": ["11", "12", "13", "10"], "2": ["10"]}


def test_two_column_format_uses_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path, "u1 b\nu2 a\nu1 a\n  \nu1 c\n")
    assert read_sequences(path) == {"u1": ["b", "a", "c"], "u2": ["a"]}


def test_three_columns_mean_rating_and_every_rating_counts(tmp_path: Path) -> None:
    path = _write(tmp_path, "u x 1\nu y 0\nu x 5\n")
    assert read_sequences(path) == {"u": ["x", "y", "x"]}


def test_json_lines_order_dedupe_and_ids_are_opaque(tmp_path: Path) -> None:
    lines = [
        _event("e1", "007", "0042", 20),
        "",
        _event("e2", "007", "x y", 10, "purchase"),
        _event("e1", "007", "0042", 20),  # redelivered: skipped
        _event("e3", "007", "z", 10),  # tie with e2: file order
        _event("e4", "b", "0042", 5),
    ]
    path = _write(tmp_path, "\n".join(lines) + "\n", "events.jsonl")
    assert read_sequences(path) == {"007": ["x y", "z", "0042"], "b": ["0042"]}
    assert [r.line for r in read_interactions(path)] == [1, 3, 5, 6]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("u i 1 10\nu\n", 2, "fields"),
        ("u i 1 10\nu i 1 10 extra\n", 2, "fields"),
        ("u i 1 10\nu j 1\n", 2, "timestamp"),
        ("u i 1 10\nu j 1 noon\n", 2, "timestamp"),
        ("u i good\n", 1, "rating"),
        ("u i 1 nan\n", 1, "finite"),
    ],
)
def test_whitespace_errors_name_the_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=rf"data.txt:{line}: .*{words}"):
        read_interactions(path)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "type": "click"}), "'ts'"),
        (
            json.dumps({"event_id": "e", "user_id": 1, "item_id": "i", "type": "click", "ts": 1}),
            "'user_id'",
        ),
        (
            json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": 1}),
            "type",
        ),
        (
            json.dumps(
                {"event_id": "e", "user_id": "u", "item_id": "i", "type": "click", "ts": True}
            ),
            "'ts'",
        ),
    ],
)
def test_json_errors_name_the_line(tmp_path: Path, bad: str, words: str) -> None:
    path = _write(tmp_path, _event("ok", "u", "i", 1) + "\n\n" + bad + "\n", "e.jsonl")
    with pytest.raises(DataError, match=rf"e.jsonl:3: .*{words}"):
        read_interactions(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_interactions(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="no interactions"):
        read_interactions(_write(tmp_path, "\n \n"))


def test_splits() -> None:
    seqs = {"a": ["1", "2", "3", "4"], "b": ["5", "6"], "c": ["1", "7", "8"]}
    assert training_sequences(seqs, 2) == {"a": ["1", "2"], "b": ["5", "6"], "c": ["1"]}
    assert training_sequences(seqs, 0) == seqs
    assert leave_one_out(seqs, "valid") == [("a", ["1", "2"], "3"), ("c", ["1"], "7")]
    assert leave_one_out(seqs, "test") == [("a", ["1", "2", "3"], "4"), ("c", ["1", "7"], "8")]
    assert holdout_cases(seqs, 1, min_events=4) == [("a", ["1", "2", "3"], "4")]
    assert item_catalog(seqs) == ["1", "2", "3", "4", "5", "6", "7", "8"]
    with pytest.raises(DataError):
        leave_one_out(seqs, "train")
    with pytest.raises(DataError):
        training_sequences(seqs, -1)
