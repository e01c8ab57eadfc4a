"""/readyz tells the truth: it asks the database itself, and names what is missing."""

from __future__ import annotations

from pathlib import Path

from streamrec.ops.settings import load_settings
from streamrec.worker import Worker


def test_readyz_fails_when_the_database_does_not_answer(model_dir: Path) -> None:
    # nothing listens on port 9 here: the ping fails at once (connection refused)
    url = "postgresql+psycopg://postgres@127.0.0.1:9/none"
    worker = Worker(load_settings(model_dir=model_dir, db_url=url, metrics_port=0))
    ready, why = worker.ready()
    assert not ready and why == "database unreachable (ping failed)"


def test_readyz_with_a_database_but_no_partitions_says_so(model_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    worker = Worker(load_settings(model_dir=model_dir, db_url=url, metrics_port=0))
    ready, why = worker.ready()
    assert not ready and why == "no partitions assigned"
