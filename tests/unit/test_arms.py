"""A/B arms: stable assignment, per-arm policies over shared state, the arm in the output."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pipelines import make_pipeline, run_events

from streamrec.core.events import Event
from streamrec.errors import ConfigError
from streamrec.ops.settings import load_settings
from streamrec.ranking.arms import Arm, Assignment
from streamrec.ranking.ranker import RankingConfig
from streamrec.state.memory import MemoryStateReader
from streamrec.worker.step import Pipeline

ARMS = '[{"name": "A"}, {"name": "B", "explore_rate": 0.5, "weight_covisit": 0.0}]'


def test_assignment_is_stable_and_follows_the_weights() -> None:
    split = Assignment([Arm("A", 1.0), Arm("B", 3.0)], salt="s1")
    users = [f"user-{n}" for n in range(20000)]
    arms = [split.arm_of(u) for u in users]
    again = Assignment([Arm("A", 1.0), Arm("B", 3.0)], salt="s1")
    assert arms == [again.arm_of(u) for u in users]  # no state: any worker, any restart
    share = Counter(arms)["A"] / len(users)
    assert 0.23 < share < 0.27
    other = Assignment([Arm("A", 1.0), Arm("B", 3.0)], salt="s2")
    moved = sum(a != other.arm_of(u) for a, u in zip(arms, users, strict=True)) / len(users)
    assert 0.3 < moved < 0.45  # a new salt reshuffles: 2 * 0.25 * 0.75 expected
    assert split.arm_of("ü-✓\ud800") in ("A", "B")  # any id the decoder accepts


@pytest.mark.parametrize(
    "arms",
    [[Arm("A")], [Arm("A"), Arm("A")], [Arm("A"), Arm("B", weight=0.0)]],
)
def test_assignment_refuses_bad_arms(arms: list[Arm]) -> None:
    with pytest.raises(ValueError):
        Assignment(arms, salt="s")


def test_arm_config_overrides_only_policy_fields() -> None:
    base = RankingConfig()
    config = Arm("B", overrides={"explore_rate": 0.2, "weight_ann": 2.0}).config(base)
    assert (config.explore_rate, config.weight_ann, config.weight_covisit) == (0.2, 2.0, 1.5)
    with pytest.raises(ValueError):
        Arm("C", overrides={"covisit_window": 3}).config(base)


def test_settings_parse_and_validate_arms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_AB_ARMS", ARMS)
    settings = load_settings()
    assert [a.name for a in settings.ab_arms] == ["A", "B"]
    assert settings.ab_arms[1].overrides() == {"explore_rate": 0.5, "weight_covisit": 0.0}
    for bad in (
        '[{"name": "A"}]',
        '[{"name": "A"}, {"name": "A"}]',
        '[{"name": "A"}, {"name": "b c"}]',
        '[{"name": "A"}, {"name": "B", "explore_rate": 1.0}]',
        '[{"name": "A"}, {"name": "B", "covisit_window": 3}]',
        "not json",
    ):
        monkeypatch.setenv("STREAMREC_AB_ARMS", bad)
        with pytest.raises(ConfigError, match="ab_arms"):
            load_settings()
    monkeypatch.setenv("STREAMREC_AB_ARMS", ARMS)
    with pytest.raises(ConfigError, match="ranking=fused"):
        load_settings(ranking="encoder")


def _pipeline(**overrides: Any) -> Pipeline:
    return make_pipeline(5, 60, 4, RankingConfig.from_settings, "v", 8, **overrides)


def _run(pipe: Pipeline, events: list[Event]) -> list[dict[str, Any]]:
    bodies, stats = run_events(pipe, events)
    pipe.last_stats = stats  # type: ignore[attr-defined]
    return bodies


def _events() -> list[Event]:
    out = [Event(f"e{n}", f"u{n % 40}", f"i{n % 17}", "click", n) for n in range(200)]
    out += [Event(f"s{n}", f"u{n}", "i3", "impression", 300, "r") for n in range(10)]
    return out


def test_each_users_list_is_ranked_by_its_arms_policy() -> None:
    pipe = _pipeline(ab_arms=ARMS, explore_rate=0.0, ab_salt="exp-1")
    assert pipe.ranker is not None and set(pipe.arm_rankers) == {"A", "B"}
    bodies = _run(pipe, _events())
    assert len(bodies) == 200
    explored: Counter[str] = Counter()
    for body in bodies:
        assert body["arm"] == pipe.arm_of(body["user_id"])
        explored[body["arm"]] += sum(it["explored"] for it in body["items"])
        if body["arm"] == "B":  # no co-visitation weight in arm B
            assert all(it["source"] != "covisit" for it in body["items"] if not it["explored"])
    assert explored["A"] == 0  # the base explore_rate 0
    assert explored["B"] > 0.3 * 5 * sum(b["arm"] == "B" for b in bodies)  # rate 0.5
    stats = pipe.last_stats  # type: ignore[attr-defined]
    assert sum(stats.arm_recommendations.values()) == 200
    assert stats.arm_recommendations["A"] == sum(b["arm"] == "A" for b in bodies)
    impressions = sum(n for (_, kind), n in stats.arm_events.items() if kind == "impression")
    assert impressions == 10
    assert sum(stats.arm_events.values()) == 210


def test_arm_rankers_share_the_stream_state_and_follow_a_model_swap() -> None:
    pipe = _pipeline(ab_arms=ARMS)
    _run(pipe, _events())
    assert pipe.ranker is not None
    for ranker in pipe.arm_rankers.values():
        assert ranker.trending is pipe.ranker.trending
        assert ranker.covisit is pipe.ranker.covisit
    new = pipe.ranker.with_model(pipe.encoder, pipe.index, [f"i{n}" for n in range(60)])
    pipe.use_model(pipe.encoder, pipe.index, "v2", new)
    assert all(r.covisit is new.covisit for r in pipe.arm_rankers.values())
    with pytest.raises(ValueError, match="stream state"):
        new.with_config(RankingConfig(covisit_window=3))


def test_without_a_test_there_is_no_arm() -> None:
    pipe = _pipeline()
    bodies = _run(pipe, _events()[:20])
    assert all("arm" not in b for b in bodies)
    assert pipe.last_stats.arm_events == Counter()  # type: ignore[attr-defined]


def test_impression_demotion_is_a_per_arm_policy() -> None:
    """Every user was shown their top item 10 times: arm ``keep`` (no demotion) still lists it
    first, arm ``demote`` never shows it (exploration off in both)."""
    from streamrec.core.history import UserState

    users = [f"u{n}" for n in range(30)]
    clicks = [Event(f"c-{u}", u, f"i{n % 17}", "click", 5) for n, u in enumerate(users)]
    base = {b["user_id"]: b for b in _run(_pipeline(explore_rate=0.0), clicks)}
    arms = (
        '[{"name": "keep", "impression_demote_strength": 0.0},'
        ' {"name": "demote", "impression_demote_strength": 5.0}]'
    )
    pipe = _pipeline(ab_arms=arms, explore_rate=0.0, ab_salt="x")
    reader = MemoryStateReader()
    top = {u: base[u]["items"][0]["item_id"] for u in users}
    reader.users = {u: UserState(impressions=((top[u], 10),)) for u in users}
    seen = Counter()
    for body in run_events(pipe, clicks, reader)[0]:
        ids = [it["item_id"] for it in body["items"]]
        seen[body["arm"]] += 1
        if body["arm"] == "keep":
            assert ids == [it["item_id"] for it in base[body["user_id"]]["items"]]
        else:
            assert top[body["user_id"]] not in ids
    assert seen["keep"] > 0 and seen["demote"] > 0


def test_arms_name_one_model_version_or_none() -> None:
    pinned = load_settings(
        ab_arms='[{"name": "A", "model_version": 4}, {"name": "B", "model_version": 4}]'
    )
    assert pinned.pinned_model_version() == 4
    assert pinned.ab_arms[0].overrides() == {}  # a version is not a ranking override
    assert load_settings(ab_arms=ARMS).pinned_model_version() is None
    assert load_settings().pinned_model_version() is None
    for bad in (
        '[{"name": "A", "model_version": 4}, {"name": "B", "model_version": 5}]',
        '[{"name": "A", "model_version": 4}, {"name": "B"}]',
        '[{"name": "A", "model_version": 0}, {"name": "B", "model_version": 0}]',
    ):
        with pytest.raises(ConfigError, match="model_version"):
            load_settings(ab_arms=bad)
