"""docs/ARCHITECTURE.md matches the tree: every module named, every named path real."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "streamrec"
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
README = (ROOT / "README.md").read_text()
TOP_LEVEL = {"__init__.py", "__main__.py", "cli.py", "demo.py", "errors.py", "testing.py"}


def _modules() -> list[str]:
    """Module files relative to streamrec/, without packages' __init__.py."""
    return sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" or p.parent == PACKAGE
    )


def test_every_module_is_on_the_map() -> None:
    missing = [m for m in _modules() if f"`{m}`" not in DOC and m not in DOC]
    assert not missing, f"modules missing from docs/ARCHITECTURE.md: {missing}"


def test_only_entry_points_and_the_public_api_stay_at_the_top() -> None:
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL, f"new top-level modules: {sorted(top - TOP_LEVEL)}"


def test_every_folder_is_in_the_table() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    rows = set(re.findall(r"^\| `(\w+)/` \|", DOC, flags=re.MULTILINE))
    assert rows == folders


def test_every_named_path_exists() -> None:
    named = set(re.findall(r"`([\w/]+\.py)`", DOC))
    missing = [n for n in named if not (PACKAGE / n).is_file() and not (ROOT / n).is_file()]
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def _diagram(text: str) -> str:
    return re.search(r"```\n(streamrec\.events ──►.*?)```", text, flags=re.DOTALL).group(1)


def test_the_picture_is_the_readme_s() -> None:
    assert _diagram(DOC) == _diagram(README)
