"""Feedback through the real broker: dismissed items never come back, items shown too often
without a click drop, bad feedback is dead-lettered, the state is in the database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import producer, read_topic, running_worker, scrape, send_events, unique_settings

from streamrec.core.events import Event
from streamrec.io.clients import ensure_topics
from streamrec.ops.settings import Settings
from streamrec.ranking.arms import Arm, Assignment
from streamrec.ranking.modelfiles import read_model_dir
from streamrec.state.store import Store

pytestmark = pytest.mark.broker

TS = 1_700_000_000_000


def _exploit(msg: dict[str, Any]) -> list[str]:
    return [it["item_id"] for it in msg["items"] if not it["explored"]]


def _all(msg: dict[str, Any]) -> list[str]:
    return [it["item_id"] for it in msg["items"]]


def test_dismissed_never_again_and_shown_n_times_without_a_click_drops(
    broker: Any, model_dir: Any, tmp_path: Any
) -> None:
    """Users u1 and u2 click the same item in the same rounds (same histories, one
    partition, so the same ranking state): u2 is the control. u1 dismisses one item of its
    first list and is shown its top item once per list without clicking it, then 5 more
    times. ``STREAMREC_IMPRESSION_DEMOTE_AFTER`` is 3 here (the default, 10, would need
    longer rounds; the unit tests check the default's threshold)."""
    settings = unique_settings(broker.bootstrap, model_dir, tmp_path, impression_demote_after=3)
    ensure_topics(settings, partitions=1)
    anchor = read_model_dir(settings.model_dir).item_ids[0]
    clicks = {u: iter(range(10)) for u in ("u1", "u2")}

    def click(user: str) -> Event:
        return Event(f"{user}-c{next(clicks[user])}", user, anchor, "click", TS)

    def shown(n: int, item: str, rec_id: str) -> Event:
        return Event(f"u1-s{n}", "u1", item, "impression", TS, rec_id)

    with running_worker(settings) as running:
        send_events(settings, [click("u1"), click("u2")])
        first = {m["user_id"]: m for m in _read(settings, 2)}
        assert _exploit(first["u1"]) == _exploit(first["u2"])  # the same state, ranked alike
        top, rejected = _exploit(first["u1"])[:2]
        rec_id = first["u1"]["rec_id"]
        later: list[Event] = [Event("u1-d", "u1", rejected, "dismiss", TS, rec_id)]
        for n in range(3):  # rounds 2..4: u1 has seen ``top`` 1, 2, 3 times
            later += [shown(n, top, rec_id), click("u1"), click("u2")]
        later += [shown(n, top, rec_id) for n in range(3, 8)]  # 8 times: round 5
        later += [click("u1"), click("u2")]
        send_events(settings, later)
        bad = producer(settings, linger_ms=0)  # an impression without its rec_id
        no_rec = {"event_id": "u1-bad", "user_id": "u1", "item_id": top, "ts": TS}
        value = json.dumps({**no_rec, "type": "impression"}).encode()
        bad.send(settings.events_topic, key=b"u1", value=value).get(30)
        bad.close()
        recs = _read(settings, 10)
        (dead,) = read_topic(settings.bootstrap_servers, settings.dlq_topic, expected=1)
        metrics = scrape(running.url)

    by_user: dict[str, list[dict[str, Any]]] = {"u1": [], "u2": []}
    for m in recs:
        by_user[m["user_id"]].append(m)
    u1, u2 = (sorted(by_user[u], key=lambda m: int(m["event_id"].split("-c")[1])) for u in by_user)
    assert len(u1) == len(u2) == 5
    for msg in u1[1:]:  # never again, not even in an exploration slot
        assert rejected not in _all(msg)
    assert any(rejected in _exploit(m) for m in u2[1:]), "control: the item would be shown"
    for r in (1, 2):  # shown once, twice: not demoted yet
        assert _exploit(u2[r]).index(top) == _exploit(u1[r]).index(top)
    control = _exploit(u2[3]).index(top)
    assert top not in _exploit(u1[3])[: control + 1]  # shown 3 times: dropped
    assert top in _exploit(u2[4])  # control
    assert top not in _exploit(u1[4])  # shown 8 times: gone from the list

    assert dict(dead.headers)["x-streamrec-error"] == b"missing_field"
    assert dead.value == value
    applied = ("streamrec_events_consumed_total", (("outcome", "applied"), ("type", "impression")))
    assert metrics[applied] == 8
    dismissed = ("streamrec_events_consumed_total", (("outcome", "applied"), ("type", "dismiss")))
    assert metrics[dismissed] == 1
    with Store(settings.db_url) as store:
        state = store.load_users(["u1"])["u1"]
    assert state.dismissed == (rejected,)
    assert state.impression_counts() == {top: 8}
    assert state.history == (anchor,) * 5  # feedback never entered the history


def _read(settings: Settings, n: int) -> list[dict[str, Any]]:
    records = read_topic(settings.bootstrap_servers, settings.recs_topic, expected=n)
    unique = {json.loads(r.value)["rec_id"]: json.loads(r.value) for r in records}
    return list(unique.values())


def test_ab_arms_through_the_broker(broker: Any, model_dir: Any, tmp_path: Any) -> None:
    """Each list carries its user's arm, ranked by that arm's policy; metrics count by arm."""
    arms = '[{"name": "control"}, {"name": "explore", "explore_rate": 0.5}]'
    settings = unique_settings(
        broker.bootstrap, model_dir, tmp_path, ab_arms=arms, ab_salt="t", explore_rate=0.0
    )
    ensure_topics(settings, partitions=2)
    items = read_model_dir(settings.model_dir).item_ids
    events = [Event(f"a{n}", f"user-{n % 30}", items[n % 40], "click", TS + n) for n in range(120)]
    split = Assignment([Arm("control"), Arm("explore")], salt="t")
    with running_worker(settings) as running:
        send_events(settings, events)
        recs = _read(settings, 120)
        metrics = scrape(running.url)
    assert len(recs) == 120
    explored = {"control": 0, "explore": 0}
    for msg in recs:
        assert msg["arm"] == split.arm_of(msg["user_id"])
        explored[msg["arm"]] += sum(it["explored"] for it in msg["items"])
    assert explored["control"] == 0 and explored["explore"] > 0
    for arm in ("control", "explore"):
        made = sum(m["arm"] == arm for m in recs)
        assert made > 0
        assert metrics[("streamrec_arm_recommendations_total", (("arm", arm),))] == made
        key = ("streamrec_arm_events_total", (("arm", arm), ("type", "click")))
        assert metrics[key] == made
