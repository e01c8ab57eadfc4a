"""The import contracts in pyproject.toml hold, and a forbidden import fails them.

``make lint`` runs ``lint-imports`` over the package; these tests run it over a copy of the
package with one forbidden import added, to prove each kind of contract can fail (and names
the rule that was broken).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy shadows the installed package
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "streamrec", tmp_path / "streamrec", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # io must know nothing of ranking (the layers contract)
        ("io/codec.py", "from streamrec.ranking.index import ItemIndex", "Layers:"),
        # ranking must know nothing of Kafka
        ("ranking/rank.py", "import kafka", "Ranking knows nothing of Kafka or SQL"),
        # a cycle between two sibling modules
        ("training/metrics.py", "import streamrec.training.evaluate", "No import cycles"),
        # evaluation may use the pure step, not the run loop
        ("evaluation/ope.py", "import streamrec.worker.loop", "never the run loop"),
        # torch stays in training
        ("worker/step.py", "import torch", "torch only inside training"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tree: Path, module: str, line: str, contract: str
) -> None:
    path = tree / "streamrec" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = _lint(tree)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
