"""Reasons per output item: the source that placed it, and a co-visited item's anchor."""

from __future__ import annotations

import json
from typing import Any

from pipelines import make_pipeline, run_events

from streamrec.core.events import REASON_SOURCES, Event, RecItem, Recommendation
from streamrec.core.history import UserState
from streamrec.io.codec import encode_recommendation
from streamrec.ranking.ranker import RankingConfig
from streamrec.worker.step import Pipeline

DIM, K, N_ITEMS = 8, 6, 50


def _pipeline(fused: bool, explore_rate: float = 0.0, **overrides: Any) -> Pipeline:
    config = RankingConfig(k=K, explore_rate=explore_rate, seed=5) if fused else None
    return make_pipeline(K, N_ITEMS, 2, config, "v", DIM, **overrides)


def _lists(pipe: Pipeline, events: list[Event]) -> list[dict[str, Any]]:
    return run_events(pipe, events)[0]


def _stream(users: int = 12, per_user: int = 6) -> list[Event]:
    """Users walking overlapping runs of items: co-visitation has evidence."""
    out = []
    for n in range(per_user):
        for u in range(users):
            item = f"i{(u % 4) * 3 + n}"
            out.append(Event(f"e{u}-{n}", f"u{u}", item, "click", 1000 * n))
    return out


def test_fused_items_say_their_source_and_covisit_its_anchor() -> None:
    events = [*_stream(), Event("s", "solo", "zz", "click", 9000)]  # trending only for solo
    lists = _lists(_pipeline(True, explore_rate=0.3), events)
    history: dict[str, list[str]] = {}
    sources = set()
    for event, body in zip(events, lists, strict=True):
        history.setdefault(event.user_id, []).append(event.item_id)
        for it in body["items"]:
            sources.add(it["source"])
            assert it["source"] in REASON_SOURCES
            assert (it["source"] == "explore") == it["explored"]
            if it["source"] == "covisit":  # co-visited with one of the latest 5 history items
                assert it["anchor"] in history[event.user_id][-5:]
            else:
                assert "anchor" not in it
    assert {"covisit", "explore", "trending"} <= sources


def test_new_users_lists_are_coldstart_until_a_known_item() -> None:
    for fused in (False, True):
        pipe = _pipeline(fused)
        unknown, known = _lists(pipe, [Event("a", "u1", "zz", "click", 1)]), None
        known = _lists(pipe, [Event("b", "u2", "i3", "click", 1)])
        assert {it["source"] for it in unknown[0]["items"]} == {"coldstart"}
        assert "coldstart" not in {it["source"] for it in known[0]["items"]}
        if not fused:
            assert {it["source"] for it in known[0]["items"]} == {"ann"}


def test_reasons_can_be_turned_off() -> None:
    for fused in (False, True):
        (body,) = _lists(_pipeline(fused, output_reasons=False), _stream(1, 1))
        assert all(
            set(it) == {"item_id", "score", "propensity", "explored"} for it in body["items"]
        )


def test_encoded_reasons_only_when_set() -> None:
    items = (
        RecItem("a", 1.0),
        RecItem("b", 0.5, source="covisit", anchor="h"),
        RecItem("c", 0.1, 0.02, True, "explore"),
    )
    body = json.loads(encode_recommendation(Recommendation("r", "u", "e", items, "v", 1)))
    assert body["items"] == [
        {"item_id": "a", "score": 1.0, "propensity": 1.0, "explored": False},
        {"item_id": "b", "score": 0.5, "propensity": 1.0, "explored": False,
         "source": "covisit", "anchor": "h"},
        {"item_id": "c", "score": 0.1, "propensity": 0.02, "explored": True, "source": "explore"},
    ]  # fmt: skip


def test_covisit_anchor_is_the_strongest_recent_row() -> None:
    pipe = _pipeline(True)
    assert pipe.ranker is not None
    covisit = pipe.ranker.covisit
    for user, items in {"x": ["a", "t"], "y": ["a", "t"], "z": ["b", "t"]}.items():
        for n, item in enumerate(items):
            covisit.observe(user, item, "click", n)
    assert covisit.anchor(["b", "a"], "t") == "a"  # 2 co-visits, latest
    assert covisit.anchor(["a", "b"], "t") == "a"  # 2 x 0.7 > 1
    assert covisit.anchor(["b"], "t") == "b"
    assert covisit.anchor(["a", "b"], "t", recent=1) == "b"
    assert covisit.anchor(["q"], "t") is None
    assert covisit.anchor(["a"], "never-seen") is None
    assert UserState().history == ()
