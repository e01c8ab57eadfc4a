"""The click commands end to end on a tiny file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from needs import require_module

from streamrec.training.cli import evaluate, train

from .synthetic import planted_sequences


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    lines = []
    for user, items in planted_sequences(num_items=20, users=60, length=8).items():
        lines += [f"{user} {item}" for item in items]
    path = tmp_path / "ring.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_baselines_need_no_model(data_file: Path) -> None:
    for baseline in ("popular", "cooc"):
        result = CliRunner().invoke(
            evaluate, ["--data", str(data_file), "--baseline", baseline, "--negatives", "all"]
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert set(report) == {"hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr", "users", "protocol"}
        assert report["users"] == 60 and report["protocol"]["scorer"] == baseline
    assert json.loads(result.output)["hr@10"] > 0.9  # cooc sees the ring


def test_usage_errors(data_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(evaluate, ["--data", str(data_file)]).exit_code == 2
    bad = runner.invoke(evaluate, ["--data", str(data_file), "--negatives", "some"])
    assert bad.exit_code == 2 and "--negatives" in bad.output
    broken = tmp_path / "broken.txt"
    broken.write_text("u i\nu\n")
    failed = runner.invoke(evaluate, ["--data", str(broken), "--baseline", "popular"])
    assert failed.exit_code == 1 and "broken.txt:2" in failed.output
    missing = runner.invoke(evaluate, ["--data", str(data_file), "--model", str(tmp_path)])
    assert missing.exit_code == 1 and "meta.json" in missing.output


def test_train_then_evaluate(data_file: Path, tmp_path: Path) -> None:
    require_module("torch")
    out = tmp_path / "model"
    args = ["--data", str(data_file), "--out", str(out), "--holdout", "2", "--epochs", "3"]
    result = CliRunner().invoke(train, [*args, "--max-len", "8", "--dim", "16", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["version"].startswith("sasrec-") and summary["items"] == 20
    assert summary["epochs_run"] == 3 and "ndcg@10" in summary["valid"]
    evaluated = CliRunner().invoke(
        evaluate, ["--data", str(data_file), "--model", str(out), "--split", "valid"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["protocol"]["split"] == "valid"


def test_train_into_a_repository_publishes_numbered_versions(
    data_file: Path, tmp_path: Path
) -> None:
    require_module("torch")
    from streamrec.ranking.repository import complete_versions, highest_complete

    repo = tmp_path / "models"
    args = ["--data", str(data_file), "--out", str(repo), "--repository", "--epochs", "1"]
    args += ["--max-len", "8", "--dim", "8", "--quiet"]
    for expected in (1, 2):
        result = CliRunner().invoke(train, args)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert summary["repository_version"] == expected
        assert summary["out"] == str(repo / str(expected))
    assert complete_versions(repo) == [2, 1] and highest_complete(repo) == (2, [])


def test_serving_side_modules_do_not_import_torch(tiny_model_dir: Path, data_file: Path) -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from streamrec.training import load_model\n"
        "from streamrec.training.cli import evaluate\n"
        f"load_model({str(tiny_model_dir)!r}).recommend(['item-1'], k=3)\n"
        f"r = CliRunner().invoke(evaluate, ['--data', {str(data_file)!r}, '--baseline', 'cooc'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_train_with_the_sampled_loss_and_a_catalog(data_file: Path, tmp_path: Path) -> None:
    require_module("torch")
    catalog = tmp_path / "catalog.txt"
    catalog.write_text("".join(f"shelf-{n}\n" for n in range(30)))
    out = tmp_path / "model"
    args = ["--data", str(data_file), "--out", str(out), "--epochs", "2", "--quiet"]
    args += ["--max-len", "8", "--dim", "16", "--loss", "sampled", "--negatives", "7"]
    result = CliRunner().invoke(train, [*args, "--catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["items"] == 20 + 30  # every catalog item has a row
    meta = json.loads((out / "meta.json").read_text())
    assert meta["extra"]["loss"] == {"kind": "sampled", "negatives": 7}
    missing = CliRunner().invoke(train, [*args, "--catalog", str(tmp_path / "none.txt")])
    assert missing.exit_code == 2 and "none.txt" in missing.output
