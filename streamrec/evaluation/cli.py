"""``streamrec replay`` and ``streamrec ope``: click commands, plus the replay's report tables.

``replay`` runs the ablation rows of ``ablation_configs`` (each a fresh index and ranker
over the same split and model), writes the JSON report and prints a Markdown table and the bar
checks of issue 7. The rows derive from the worker's own configuration
(``RankingConfig.from_settings``: ``STREAMREC_*`` variables and defaults), so the replay measures
what the worker runs; ``--explore-rate`` and ``--explore-from`` override those two settings.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from streamrec.ranking.ranker import RankingConfig

ENCODER_ONLY = "encoder only"
TRENDING_ONLY = "trending only"
COVISIT_ONLY = "co-visitation only"
ENC_TREND = "encoder + trending"
ENC_TREND_NEW = "encoder + trending + new-item vectors"
FUSED = "fused (all sources)"
FUSED_NO_NEW = "fused without new-item vectors"
FUSED_EXPLORE = "fused + exploration"


def ablation_configs(base: RankingConfig) -> dict[str, RankingConfig]:
    """The replay's rows: single sources, cumulative parts, fused with exploration off/on.

    ``base`` is the full configuration (the worker's); its exploration settings make the last
    row, every other row has exploration off.
    """
    off = replace(base, explore_rate=0.0)
    return {
        ENCODER_ONLY: replace(off, sources=("ann",), new_item_vectors=False),
        TRENDING_ONLY: replace(off, sources=("trending",), new_item_vectors=False),
        COVISIT_ONLY: replace(off, sources=("covisit",), new_item_vectors=False),
        ENC_TREND: replace(off, sources=("ann", "trending"), new_item_vectors=False),
        ENC_TREND_NEW: replace(off, sources=("ann", "trending"), new_item_vectors=True),
        FUSED_NO_NEW: replace(off, new_item_vectors=False),
        FUSED: off,
        FUSED_EXPLORE: base,
    }


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """One line per row: overall metrics, NDCG@10 per segment, coverage, bias, exploration."""
    segs = ["history=0", "history=1-4", "history=5-19", "history=20+", "item=seen", "item=new"]
    head = ["row", "HR@10", "NDCG@10", "MRR", *[f"NDCG {s}" for s in segs]]
    head += ["coverage", "pop. bias", "explored"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        o = row["overall"]
        cells = [name, f"{o['hr@10']:.4f}", f"{o['ndcg@10']:.4f}", f"{o['mrr']:.4f}"]
        cells += [f"{row['segments'][s]['ndcg@10']:.4f}" for s in segs]
        cells += [f"{row['coverage']:.3f}", f"{row['popularity_bias']:.3f}"]
        cells += [f"{row['exploration_rate']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        counts = next(iter(rows.values()))["segments"]
        lines.append("")
        lines.append("Events per segment: " + ", ".join(f"{s} {counts[s]['n']}" for s in segs))
    return "\n".join(lines)


def bar_checks(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The bars of issue 7, each with the figures it compares and pass/fail."""
    need = {ENCODER_ONLY, TRENDING_ONLY, COVISIT_ONLY, FUSED, FUSED_EXPLORE}
    if not need <= set(rows):
        return []

    def ndcg(name: str, seg: str | None = None) -> float:
        row = rows[name]
        return float((row["segments"][seg] if seg else row["overall"])["ndcg@10"])

    checks = [_check("fused > encoder only, overall NDCG@10", ndcg(FUSED), ">", ndcg(ENCODER_ONLY))]
    for seg in ("history=1-4", "history=5-19", "history=20+"):
        checks.append(
            _check(f"fused > trending only, {seg}", ndcg(FUSED, seg), ">", ndcg(TRENDING_ONLY, seg))
        )
    checks.append(
        _check(
            "fused >= trending only, history=0",
            ndcg(FUSED, "history=0"),
            ">=",
            ndcg(TRENDING_ONLY, "history=0"),
        )
    )
    best_single = max((ENCODER_ONLY, TRENDING_ONLY, COVISIT_ONLY), key=ndcg)
    checks.append(
        _check(f"fused > best single source ({best_single})", ndcg(FUSED), ">", ndcg(best_single))
    )
    cov_on, cov_off = rows[FUSED_EXPLORE]["coverage"], rows[FUSED]["coverage"]
    checks.append(_check("coverage explore on / off >= 1.5", cov_on / cov_off, ">=", 1.5))
    hr_on, hr_off = rows[FUSED_EXPLORE]["overall"]["hr@10"], rows[FUSED]["overall"]["hr@10"]
    cost = 1.0 - hr_on / hr_off if hr_off else math.inf
    checks.append(_check("relative HR@10 cost of exploration <= 10%", cost, "<=", 0.10))
    return checks


def _check(what: str, value: float, op: str, bound: float) -> dict[str, Any]:
    ok = {">": value > bound, ">=": value >= bound, "<=": value <= bound}[op]
    return {"bar": what, "value": round(value, 4), "op": op, "bound": round(bound, 4), "pass": ok}


def _train_on_warmup(warmup: list[Any], model: Path, epochs: int, max_len: int) -> None:
    from streamrec.io.codec import encode_event
    from streamrec.training.train import TrainConfig, train_file

    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "warmup.jsonl"
        prefix.write_bytes(b"".join(encode_event(e) + b"\n" for e in warmup))
        train_file(prefix, model, TrainConfig(epochs=epochs, max_len=max_len))


@click.command("replay")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_path", required=True, type=click.Path(file_okay=False))
@click.option("--warmup-fraction", default=0.8, show_default=True, type=float)
@click.option("--out", type=click.Path(dir_okay=False), help="write the JSON report here")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option(
    "--explore-rate", type=float, help="exploration rate of the last row [setting explore_rate]"
)
@click.option(
    "--explore-from",
    type=click.Choice(["ann", "fused", "catalog"]),
    help="exploration pool of the last row [setting explore_from]",
)
@click.option("--row", "only", multiple=True, help="run only these ablation rows (repeatable)")
@click.option(
    "--ab-arms",
    help="A/B arms as JSON (replaces STREAMREC_AB_ARMS) [setting ab_arms]",
)
@click.option(
    "--by-arm",
    is_flag=True,
    help="one replay of the A/B test: each arm side by side with intervals, and the "
    "off-policy estimate of each greedy arm from its exploring twin's lists",
)
@click.option("--oracle", is_flag=True, help="--by-arm: replay each greedy target for all users")
@click.option("--ope-log", type=click.Path(dir_okay=False), help="--by-arm: write the lists here")
@click.option("--boot", default=1000, show_default=True, help="bootstrap replicates (--by-arm)")
@click.option("--epochs", default=40, show_default=True, help="training, if --model is absent")
@click.option("--max-len", default=50, show_default=True, help="training, if --model is absent")
@click.option("--progress/--no-progress", default=True, show_default=True)
def replay(
    data_path: str,
    model_path: str,
    warmup_fraction: float,
    out: str | None,
    batch_size: int,
    explore_rate: float | None,
    explore_from: str | None,
    only: tuple[str, ...],
    ab_arms: str | None,
    by_arm: bool,
    oracle: bool,
    ope_log: str | None,
    boot: int,
    epochs: int,
    max_len: int,
    progress: bool,
) -> None:
    """Prequential (test-then-train) replay of a log through the worker's pipeline.

    The model in --model must have been trained on the first --warmup-fraction of the log by
    time (checked: it may not know items that only appear later); when --model does not exist
    it is trained on that prefix first.

    With --by-arm, the replay runs once with the A/B arms of the settings (STREAMREC_AB_ARMS
    or --ab-arms): every user is ranked by the policy of its arm, and each arm's HR@10,
    NDCG@10 and coverage are reported with 95% intervals (bootstrap over users), next to the
    off-policy estimates (``streamrec.evaluation.arms``).
    """
    from streamrec.errors import ConfigError
    from streamrec.evaluation.replay import ReplayData, check_no_leakage, load_log, replay_config
    from streamrec.ops.settings import load_settings
    from streamrec.ranking.encoder import OnnxEncoder
    from streamrec.ranking.modelfiles import read_model_dir

    try:
        settings = load_settings(
            explore_rate=explore_rate, explore_from=explore_from, ab_arms=ab_arms
        )
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    if by_arm and not settings.ab_arms:
        raise click.BadParameter("--by-arm needs A/B arms (STREAMREC_AB_ARMS or --ab-arms)")
    events = load_log(data_path)
    model = Path(model_path)
    if not (model / "meta.json").is_file():
        cut = int(len(events) * warmup_fraction)
        click.echo(f"training {model} on the first {cut} events", err=True)
        _train_on_warmup(events[:cut], model, epochs, max_len)
    files = read_model_dir(model)
    data = ReplayData.build(events, files, warmup_fraction)
    try:
        check_no_leakage(files, data.warmup)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    encoder = OnnxEncoder(files.encoder_path(), files.meta.dim, files.meta.max_len, 1)
    if by_arm:
        _replay_by_arm(data, encoder, settings, oracle, boot, progress, ope_log, out)
        return
    configs = ablation_configs(RankingConfig.from_settings(settings))
    unknown = set(only) - set(configs)
    if unknown:
        raise click.BadParameter(f"unknown rows {sorted(unknown)}; rows: {list(configs)}")
    rows = {}
    for name, config in configs.items():
        if only and name not in only:
            continue
        rows[name] = replay_config(
            data, encoder, config, name, batch_size, settings=settings, progress=progress
        )
    report = {
        "data": str(data_path),
        "model": str(model),
        "model_version": files.meta.version,
        "warmup_fraction": warmup_fraction,
        "warmup_events": len(data.warmup),
        "replayed_events": len(data.test),
        "batch_size": batch_size,
        "rows": rows,
        "bars": bar_checks(rows),
    }
    if out:
        Path(out).write_text(json.dumps(report, indent=2, sort_keys=True))
    click.echo(markdown_table(rows))
    for check in bar_checks(rows):
        verdict = "PASS" if check["pass"] else "FAIL"
        click.echo(f"{verdict}  {check['bar']}: {check['value']} {check['op']} {check['bound']}")


def _replay_by_arm(
    data: Any,
    encoder: Any,
    settings: Any,
    oracle: bool,
    boot: int,
    progress: bool,
    ope_log: str | None,
    out: str | None,
) -> None:
    from streamrec.evaluation.arms import arms_table, ope_table, replay_arms

    try:
        result = replay_arms(data, encoder, settings, oracle, boot, progress, ope_log)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    report = {
        "arms_setting": [a.model_dump(exclude_none=True) for a in settings.ab_arms],
        "salt": settings.ab_salt,
        "model_version": data.files.meta.version,
        "warmup_events": len(data.warmup),
        "replayed_events": len(data.test),
        **result,
    }
    if out:
        Path(out).write_text(json.dumps(report, indent=2, sort_keys=True))
    click.echo(arms_table(result["arms"]))
    if result["ope"]:
        click.echo("")
        click.echo(ope_table(result["ope"]))


@click.command("ope")
@click.option("--log", "log_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--target",
    type=click.Choice(["greedy", "logged", "field"]),
    default="greedy",
    show_default=True,
    help="candidate policy: exploration off, the logging policy, or target_propensity fields",
)
@click.option("--clip", default=100.0, show_default=True, help="largest importance weight")
@click.option("--horizon-s", default=3600.0, show_default=True, help="click attribution window")
@click.option(
    "--by-arm",
    is_flag=True,
    help="estimate per A/B arm (the lists' arm field), side by side, with 95% intervals",
)
@click.option("--boot", default=1000, show_default=True, help="bootstrap replicates (intervals)")
def ope(log_path: str, target: str, clip: float, horizon_s: float, by_arm: bool, boot: int) -> None:
    """IPS and self-normalised IPS estimates of a candidate policy's clicks per list.

    Intervals (``*_ci``, 95%) come from a bootstrap over users. With --by-arm, each arm's
    lists are estimated on their own: the logged value is the arm's measured clicks per
    list, and the IPS/SNIPS values estimate what --target would have had on that arm's users
    (e.g. ``greedy`` from an exploring arm, next to a greedy arm's logged value).
    """
    from streamrec.evaluation.ope import TARGETS, estimate_with_ci, read_log
    from streamrec.evaluation.ope import by_arm as group

    try:
        lists = read_log(log_path, horizon_ms=int(horizon_s * 1000))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not by_arm:
        result = estimate_with_ci(lists, TARGETS[target], clip=clip, n_boot=boot)
        click.echo(json.dumps({"target": target, **result}, indent=2, sort_keys=True))
        return
    arms = {
        arm: estimate_with_ci(rows, TARGETS[target], clip=clip, n_boot=boot)
        for arm, rows in group(lists).items()
    }
    click.echo(json.dumps({"target": target, "arms": arms}, indent=2, sort_keys=True))
    click.echo(_ope_arm_table(target, arms), err=True)


def _ope_arm_table(target: str, arms: dict[str, dict[str, Any]]) -> str:
    def cell(result: dict[str, Any], key: str, ci: str) -> str:
        low, high = result[ci]
        return f"{result[key]:.4f} [{low:.4f}, {high:.4f}]"

    lines = [f"| arm | lists | users | logged value | IPS of {target} | SNIPS of {target} |"]
    lines.append("|---|---|---|---|---|---|")
    for arm, r in arms.items():
        lines.append(
            f"| {arm} | {r['lists']} | {r['users']} | {cell(r, 'logged_value', 'logged_ci')} | "
            f"{cell(r, 'ips', 'ips_ci')} | {cell(r, 'snips', 'snips_ci')} |"
        )
    return "\n".join(lines)
