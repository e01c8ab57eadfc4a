"""Click commands ``train`` and ``evaluate`` (registered by ``streamrec.cli``).

torch is imported inside ``train`` only, so ``streamrec --help`` and ``streamrec evaluate``
work without it.
"""

from __future__ import annotations

import json
import sys

import click

from streamrec.errors import StreamrecError


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.command("train")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Interactions: 'user item [rating] [timestamp]' lines or JSON-lines events.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model directory to write.",
)
@click.option(
    "--holdout",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Leave each user's last N events out. 0 trains on everything for a fixed "
    "number of epochs; N >= 1 validates on seq[-N] (N=2: the validation split of "
    "`evaluate`) and stops early on NDCG@10.",
)
@click.option(
    "--epochs",
    default=None,
    type=click.IntRange(1),
    help="Epochs (holdout 0, default 50) or maximum epochs (default 100).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--max-len",
    default=200,
    show_default=True,
    type=click.IntRange(1),
    help="Longest history the encoder reads.",
)
@click.option("--dim", default=64, show_default=True, type=click.IntRange(1))
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="torch threads. Results are deterministic per seed and thread count. More threads "
    "only help on idle cores: with other busy processes they slow training down a lot.",
)
@click.option(
    "--loss",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "full", "sampled"]),
    help="full softmax over the catalog, or a sampled softmax over --negatives shared "
    "negatives; auto: full up to 10,000 items, sampled above.",
)
@click.option(
    "--negatives",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Negatives per batch of the sampled softmax.",
)
@click.option(
    "--catalog",
    "catalog_path",
    default=None,
    type=click.Path(dir_okay=False, exists=True),
    help="A file of item ids (one per line) to embed besides the items in --data.",
)
@click.option("--int8", is_flag=True, help="Also write encoder.int8.onnx.")
@click.option(
    "--repository",
    is_flag=True,
    help="--out is a model repository: write the model as its next numbered version "
    "(OUT/1, OUT/2, ...), its manifest last; workers following OUT swap it in.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(
    data_path: str,
    out_dir: str,
    holdout: int,
    epochs: int | None,
    seed: int,
    max_len: int,
    dim: int,
    threads: int,
    loss: str,
    negatives: int,
    catalog_path: str | None,
    int8: bool,
    repository: bool,
    quiet: bool,
) -> None:
    """Train the sequence encoder on CPU and write a model directory.

    Prints one JSON object: the model version, directory, epochs and validation metrics.
    """
    from streamrec.training.train import TrainConfig, train_file  # imports torch

    config = TrainConfig(
        holdout=holdout,
        epochs=epochs,
        seed=seed,
        max_len=max_len,
        dim=dim,
        threads=threads,
        loss=loss,
        sampled_negatives=negatives,
        progress=not quiet,
    )
    try:
        catalog = _read_catalog(catalog_path) if catalog_path else ()
        summary = train_file(
            data_path, out_dir, config, int8=int8, repository=repository, catalog=catalog
        )
    except (StreamrecError, ValueError) as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps(summary, sort_keys=True))


def _read_catalog(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [line.strip() for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read the catalog file {path}: {exc}") from exc


@click.command("evaluate")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The interactions the model was trained on (same format as train).",
)
@click.option(
    "--model",
    "model_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Model directory (required with --baseline model).",
)
@click.option("--split", default="test", show_default=True, type=click.Choice(["valid", "test"]))
@click.option(
    "--negatives",
    default="100",
    show_default=True,
    help="Sampled negatives per user, or 'all' to rank the whole catalogue.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Negative sampling seed.")
@click.option(
    "--baseline",
    default="model",
    show_default=True,
    type=click.Choice(["model", "popular", "cooc"]),
    help="What to score with: the model or a baseline fit on the training portion.",
)
@click.option("--int8", is_flag=True, help="Score with encoder.int8.onnx.")
def evaluate(
    data_path: str,
    model_dir: str | None,
    split: str,
    negatives: str,
    seed: int,
    baseline: str,
    int8: bool,
) -> None:
    """Leave-one-out evaluation; prints one JSON object (hr@10, ndcg@10, hr@20, ndcg@20, mrr)."""
    from streamrec.training.evaluate import evaluate_file

    if negatives == "all":
        count: int | None = None
    elif negatives.isdigit() and int(negatives) > 0:
        count = int(negatives)
    else:
        raise click.BadParameter("a positive integer or 'all'", param_hint="--negatives")
    if baseline == "model" and model_dir is None:
        raise click.UsageError("--model is required unless --baseline is popular or cooc")
    try:
        result = evaluate_file(data_path, split, count, seed, baseline, model_dir, int8=int8)
    except StreamrecError as exc:
        raise _fail(exc) from exc
    json.dump(result, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
