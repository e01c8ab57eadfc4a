"""Impression demotion on ML-100k: the streaming replay with every published list shown.

``streamrec.evaluation.replay.replay_config(impressions=True)``: the fused ranking with the
product's defaults (exploration included) is replayed test-then-train through
``Pipeline.process``; after each batch, every item of every published list is folded in as an
``impression`` of its user, so an item shown ``STREAMREC_IMPRESSION_DEMOTE_AFTER`` times
without being rated is demoted in that user's later lists. Rows: one per ``after:strength``
pair of ``--pairs`` (strength 0: demotion off). The model is trained on the warm-up part
(``benchmarks/replay.py``'s ``train_warmup_model``), or reused.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/replay_impressions.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
from harness import HERE, data_option, epochs_option, train_warmup_model

DEFAULT_PAIRS = "3:0,3:0.5,3:1.0,5:0.25,5:0.5,10:0.25,10:0.5,20:0.5"


@click.command()
@data_option
@click.option("--model", default="/tmp/replay-ml100k/model", show_default=True)
@click.option("--fraction", default=0.8, show_default=True)
@click.option(
    "--pairs", default=DEFAULT_PAIRS, show_default=True, help="after:strength rows, comma-separated"
)
@epochs_option
def main(data: str, model: str, fraction: float, pairs: str, epochs: int) -> None:
    """Replay with impressions for each (after, strength) pair; print and write the rows."""
    from streamrec.evaluation.replay import ReplayData, load_log, replay_config
    from streamrec.ops.settings import load_settings
    from streamrec.ranking.encoder import OnnxEncoder
    from streamrec.ranking.modelfiles import read_model_dir
    from streamrec.ranking.ranker import RankingConfig

    events = load_log(data)
    train_warmup_model(data, Path(model), fraction, epochs, events)
    files = read_model_dir(Path(model))
    replay_data = ReplayData.build(events, files, fraction)
    encoder = OnnxEncoder(files.encoder_path(), files.meta.dim, files.meta.max_len, 1)
    rows = {}
    for pair in pairs.split(","):
        after, strength = int(pair.split(":")[0]), float(pair.split(":")[1])
        settings = load_settings(impression_demote_after=after, impression_demote_strength=strength)
        config = RankingConfig.from_settings(settings)
        name = f"after {after}, strength {strength}"
        started = time.perf_counter()
        row = replay_config(replay_data, encoder, config, name, settings=settings, impressions=True)
        row["seconds"] = round(time.perf_counter() - started, 1)
        row["demote_after"], row["demote_strength"] = after, strength
        row["load_average"] = round(os.getloadavg()[0], 2)
        rows[name] = row
        click.echo(f"{name}: {json.dumps(_brief(row))} ({row['seconds']} s)", err=False)
    (HERE / "replay_impressions.json").write_text(json.dumps(rows, indent=2, sort_keys=True))


def _brief(row: dict) -> dict:
    keep = ("overall", "coverage", "exploration_rate", "popularity_bias", "repeat_share")
    return {k: row[k] for k in keep if k in row}


if __name__ == "__main__":
    main()
