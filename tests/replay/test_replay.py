"""The prequential replay end to end: a tiny simulated log through the real Pipeline."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamrec.core.events import Event
from streamrec.evaluation.cli import ope, replay
from streamrec.evaluation.replay import (
    ReplayData,
    check_no_leakage,
    history_segment,
    load_log,
    replay_config,
    user_disjoint_batches,
)
from streamrec.io.codec import encode_event
from streamrec.io.simulate import SimConfig, Simulator
from streamrec.ranking.encoder import OnnxEncoder
from streamrec.ranking.modelfiles import read_model_dir
from streamrec.ranking.ranker import RankingConfig
from streamrec.ranking.trending import Trending

# conftest's model_dir is trained on exactly the first 3000 of these events
FULL = 3750


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "log.jsonl"
    events = Simulator(SimConfig(users=200, items=120, seed=7)).events(FULL)
    path.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    return path


@pytest.fixture(scope="module")
def data(log_path: Path, model_dir: Path) -> ReplayData:
    return ReplayData.build(load_log(log_path), read_model_dir(model_dir), 0.8)


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> OnnxEncoder:
    files = read_model_dir(model_dir)
    return OnnxEncoder(files.encoder_path(), files.meta.dim, files.meta.max_len)


def test_split_is_by_time_and_the_model_saw_only_the_warmup(data: ReplayData) -> None:
    assert len(data.warmup) == 3000 and len(data.test) == 750
    assert max(e.ts for e in data.warmup) <= min(e.ts for e in data.test)
    check_no_leakage(data.files, data.warmup)
    with pytest.raises(ValueError, match="absent from the warm-up"):
        check_no_leakage(data.files, data.warmup[:100])


def test_batches_never_hold_a_user_twice_and_keep_order() -> None:
    events = [Event(f"e{n}", f"u{n % 3}", "i", "click", n) for n in range(20)]
    events.insert(2, Event("dup", "u0", "i", "click", 2))
    batches = list(user_disjoint_batches(events, 5))
    assert [e for b in batches for e in b] == events
    assert all(len({e.user_id for e in b}) == len(b) <= 5 for b in batches)


def test_history_segments() -> None:
    got = [history_segment(n) for n in (0, 1, 4, 5, 19, 20, 500)]
    assert got == [
        "history=0",
        "history=1-4",
        "history=1-4",
        "history=5-19",
        "history=5-19",
        "history=20+",
        "history=20+",
    ]


def test_replay_scores_every_event_and_is_deterministic(
    data: ReplayData, encoder: OnnxEncoder
) -> None:
    config = RankingConfig(explore_rate=0.2, seed=3)
    a = replay_config(data, encoder, config, batch_size=16, progress=False)
    b = replay_config(data, encoder, config, batch_size=16, progress=False)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert a["overall"]["n"] == 750
    hist = sum(a["segments"][s]["n"] for s in a["segments"] if s.startswith("history"))
    items = a["segments"]["item=seen"]["n"] + a["segments"]["item=new"]["n"]
    assert hist == items == 750
    assert 0.0 < a["overall"]["hr@10"] <= 1.0
    assert a["overall"]["mrr"] <= a["overall"]["ndcg@10"] <= a["overall"]["hr@10"]
    assert a["exploration_rate"] == pytest.approx(0.2, abs=0.05)
    assert a["lists"] >= 750
    off = replay_config(data, encoder, replace(config, explore_rate=0.0), progress=False)
    assert off["exploration_rate"] == 0.0


def test_test_then_train_scores_the_list_from_before_the_event(
    data: ReplayData, encoder: OnnxEncoder
) -> None:
    """A new user clicking the hottest item twice: a hit first, then a miss (it is history)."""
    trending = Trending(half_life_s=60.0)
    for e in data.warmup:
        trending.observe(e.item_id, e.type, e.ts)
    [(hot, _)] = trending.top(1)
    ts = data.test[0].ts
    probe = [Event(f"p{n}", "newcomer", hot, "click", ts + n) for n in range(2)]
    probed = replace(data, test=probe)
    config = RankingConfig(sources=("trending",), explore_rate=0.0, trending_half_life_s=60.0)
    got = replay_config(probed, encoder, config, batch_size=8, progress=False)
    assert got["segments"]["history=0"]["hr@10"] == 1.0
    assert got["segments"]["history=0"]["ndcg@10"] == 1.0  # the trending list's first item
    assert got["segments"]["history=1-4"]["n"] == 1
    assert got["segments"]["history=1-4"]["hr@10"] == 0.0


def test_replay_cli_writes_the_report(log_path: Path, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = [
        "--data",
        str(log_path),
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--row",
        "trending only",
        "--row",
        "encoder only",
        "--no-progress",
    ]
    result = CliRunner().invoke(replay, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {"trending only", "encoder only"}
    assert report["replayed_events"] == 750
    assert "| trending only |" in result.output
    bad = CliRunner().invoke(replay, [*args[:6], "--row", "nope"])
    assert bad.exit_code != 0


def test_replay_cli_measures_the_worker_settings_unless_flags_override(
    log_path: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report.json"
    base = ["--data", str(log_path), "--model", str(model_dir), "--no-progress"]
    row = ["--row", "fused + exploration", "--out", str(out)]
    monkeypatch.setenv("STREAMREC_EXPLORE_FROM", "catalog")
    monkeypatch.setenv("STREAMREC_WEIGHT_COVISIT", "2.5")
    result = CliRunner().invoke(replay, [*base, *row, "--explore-rate", "0.3"])
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())["rows"]["fused + exploration"]
    assert got["config"]["explore_from"] == "catalog"  # from the environment
    assert got["config"]["weight_covisit"] == 2.5
    assert got["config"]["explore_rate"] == 0.3  # the flag wins
    assert got["exploration_rate"] == pytest.approx(0.3, abs=0.05)
    bad = CliRunner().invoke(replay, [*base, *row, "--explore-rate", "1.5"])
    assert bad.exit_code != 0 and "explore_rate" in bad.output


def test_ope_cli(tmp_path: Path) -> None:
    lines = [
        {
            "user_id": "u",
            "generated_at": 10,
            "items": [
                {"item_id": "a", "propensity": 0.9, "explored": False},
                {"item_id": "p", "propensity": 0.05, "explored": True},
            ],
        },
        {"event_id": "e1", "user_id": "u", "item_id": "a", "type": "click", "ts": 20},
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(x) for x in lines))
    result = CliRunner().invoke(ope, ["--log", str(log)])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["ips"] == pytest.approx(1 / 0.9) and got["snips"] == pytest.approx(1.0)


def test_replay_with_impressions_demotes_what_was_shown(
    data: ReplayData, encoder: OnnxEncoder
) -> None:
    """Every published list is shown: without demotion nothing changes; with it, users are
    shown far fewer items they were already shown."""
    from streamrec.ops.settings import load_settings

    config = RankingConfig(explore_rate=0.0)
    plain = replay_config(data, encoder, config, progress=False)
    off = replay_config(
        data,
        encoder,
        config,
        settings=load_settings(impression_demote_strength=0.0),
        progress=False,
        impressions=True,
    )
    on = replay_config(
        data,
        encoder,
        config,
        settings=load_settings(impression_demote_strength=2.0, impression_demote_after=1),
        progress=False,
        impressions=True,
    )
    for row in (plain, off, on):
        row.pop("seconds")
    assert off == plain
    assert on["overall"]["n"] == 750
    assert on["repeat_share"] < 0.5 * off["repeat_share"]
    assert on["overall"] != off["overall"]


ARMS_SAME = '[{"name": "A"}, {"name": "B"}]'
ARMS_GREEDY = '[{"name": "A"}, {"name": "B", "explore_rate": 0}]'


def test_arms_with_one_policy_replay_as_no_arms(data: ReplayData, encoder: OnnxEncoder) -> None:
    from streamrec.evaluation.arms import replay_arms
    from streamrec.ops.settings import load_settings

    settings = load_settings(ab_arms=ARMS_SAME, explore_rate=0.2)
    config = RankingConfig.from_settings(settings)
    plain = replay_config(data, encoder, config, settings=load_settings(explore_rate=0.2))
    got = replay_arms(data, encoder, settings, n_boot=50, progress=False)
    for row in (plain, got["replay"]):
        row.pop("seconds")
    assert got["replay"] == plain
    arms = got["arms"]
    assert arms["A"]["events"] + arms["B"]["events"] == 750
    hits = sum(a["hr@10"]["value"] * a["events"] for a in arms.values())
    assert hits / 750 == pytest.approx(plain["overall"]["hr@10"])
    assert got["ope"] == []  # no arm is the greedy twin of another


def test_replay_cli_by_arm_and_ope_cli_by_arm_agree(
    log_path: Path, model_dir: Path, tmp_path: Path
) -> None:
    out, log = tmp_path / "arms.json", tmp_path / "ope.jsonl"
    args = ["--data", str(log_path), "--model", str(model_dir), "--no-progress", "--by-arm"]
    args += ["--ab-arms", ARMS_GREEDY, "--explore-rate", "0.3", "--oracle", "--boot", "100"]
    result = CliRunner().invoke(replay, [*args, "--out", str(out), "--ope-log", str(log)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    arms = report["arms"]
    assert arms["A"]["exploration_rate"] > 0.2 and arms["B"]["exploration_rate"] == 0.0
    for arm in arms.values():
        low, high = arm["ndcg@10"]["ci"]
        assert low <= arm["ndcg@10"]["value"] <= high
    (comparison,) = report["ope"]
    assert (comparison["logging_arm"], comparison["target_arm"]) == ("A", "B")
    hr = comparison["hr@10"]
    # the oracle replay ranks everyone with B's policy: B's own users get B's lists again
    assert hr["oracle_on_target_users"] == pytest.approx(hr["measured"])
    assert hr["ips_ci"][0] <= hr["ips"] <= hr["ips_ci"][1]
    assert "| hr@10 | B (A," in result.output
    by_arm = CliRunner().invoke(ope, ["--log", str(log), "--by-arm", "--boot", "100"])
    assert by_arm.exit_code == 0, by_arm.output
    got = json.loads(by_arm.stdout)["arms"]
    assert got["A"]["ips"] == pytest.approx(hr["ips"])
    assert got["B"]["logged_value"] == pytest.approx(hr["measured"])
    assert got["A"]["lists"] == arms["A"]["events"]
    missing = CliRunner().invoke(replay, args[:6])
    assert missing.exit_code != 0 and "--by-arm needs A/B arms" in missing.output
