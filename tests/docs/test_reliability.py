"""RELIABILITY.md's results table is generated from the fault tests' results file."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("reliability", ROOT / "tests/faults/reliability.py")
assert SPEC is not None and SPEC.loader is not None
reliability = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(reliability)


def _row(test: str, db: str, lost: int = 0) -> dict[str, object]:
    return {
        "test": test,
        "db": db,
        "faults": "x",
        "recovery_s_max": 1.25,
        "events": 2500,
        "distinct": 2451,
        "lost": lost,
        "duplicated_effects": 0,
        "outputs": 2451,
        "duplicate_outputs": 3,
    }


def test_the_table_is_rewritten_from_the_results_file(tmp_path: Path) -> None:
    doc = tmp_path / "RELIABILITY.md"
    shutil.copy(ROOT / "RELIABILITY.md", doc)
    results = tmp_path / "faults.jsonl"
    rows = [_row("12 broker SIGKILL", "sqlite"), _row("1 kill -9 x2", "postgresql", lost=7)]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert reliability.main(str(results), str(doc)) == 0
    text = doc.read_text()
    block = text.split(reliability.BEGIN, 1)[1].split(reliability.END, 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("| 1") or "| 12" in line]
    assert lines[0].startswith("| 1 kill -9 x2 | postgresql | 2,500 (2,451) | x | 7 |")
    assert lines[1].startswith("| 12 broker SIGKILL | sqlite |")
    assert "| 0 kill" not in text and text.count(reliability.BEGIN) == 1
    assert (
        text.split(reliability.END, 1)[1]
        == (ROOT / "RELIABILITY.md").read_text().split(reliability.END, 1)[1]
    ), "text after the table changed"


def test_an_empty_results_file_writes_nothing(tmp_path: Path) -> None:
    doc = tmp_path / "RELIABILITY.md"
    shutil.copy(ROOT / "RELIABILITY.md", doc)
    (tmp_path / "faults.jsonl").write_text("")
    assert reliability.main(str(tmp_path / "faults.jsonl"), str(doc)) == 1
    assert doc.read_text() == (ROOT / "RELIABILITY.md").read_text()
