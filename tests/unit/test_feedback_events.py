"""Feedback events (impression, dismiss): their topic contract and their fold (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.core.events import EVENT_TYPES, FEEDBACK_TYPES, Event
from streamrec.core.history import (
    EMPTY,
    MAX_DISMISSED,
    MAX_IMPRESSED,
    UserState,
    apply_event,
    fold_events,
)
from streamrec.errors import BadEvent
from streamrec.io.codec import decode_event, encode_event

TS = 1_700_000_000_000
IMPRESSION: dict[str, Any] = {
    "event_id": "imp-1",
    "user_id": "u1",
    "item_id": "i1",
    "type": "impression",
    "ts": TS,
    "rec_id": "rec-abc",
}
DISMISS: dict[str, Any] = {
    "event_id": "dis-1",
    "user_id": "u1",
    "item_id": "i1",
    "type": "dismiss",
    "ts": TS,
}


def _raw(base: dict[str, Any], **changes: Any) -> bytes:
    obj = {**base, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not _DROP}).encode()


_DROP = object()


def _reason(raw: bytes, **kwargs: Any) -> BadEvent:
    with pytest.raises(BadEvent) as info:
        decode_event(raw, **kwargs)
    return info.value


def _ev(eid: str, item: str, kind: str = "click", ts: int = 0, rec: str | None = None) -> Event:
    return Event(eid, "u1", item, kind, ts, rec)  # type: ignore[arg-type]


# -- contract ------------------------------------------------------------------------------


def test_types_are_the_contract() -> None:
    assert EVENT_TYPES == ("click", "purchase", "impression", "dismiss")
    assert FEEDBACK_TYPES == ("impression", "dismiss")


def test_decode_impression_with_key() -> None:
    event = decode_event(_raw(IMPRESSION), key=b"u1")
    assert event == Event("imp-1", "u1", "i1", "impression", TS, "rec-abc")
    assert event.is_feedback


@pytest.mark.parametrize("rec_id", [_DROP, None, "rec-9"])
def test_decode_dismiss_rec_id_is_optional(rec_id: Any) -> None:
    event = decode_event(_raw(DISMISS, rec_id=rec_id))
    assert event.type == "dismiss"
    assert event.rec_id == (rec_id if isinstance(rec_id, str) else None)
    assert event.is_feedback


@pytest.mark.parametrize("rec_id", [7, "", "x" * 300, "a\x00b", ["r"]])
def test_old_producers_clicks_ignore_rec_id(rec_id: Any) -> None:
    """A click or purchase is decoded as before, whatever else the record carries."""
    for kind in ("click", "purchase"):
        event = decode_event(_raw(IMPRESSION, type=kind, rec_id=rec_id))
        assert event == Event("imp-1", "u1", "i1", kind, TS)  # type: ignore[arg-type]
        assert not event.is_feedback


@pytest.mark.parametrize(
    ("base", "changes", "reason", "field"),
    [
        (IMPRESSION, {"rec_id": _DROP}, "missing_field", "rec_id"),
        (IMPRESSION, {"rec_id": None}, "wrong_type", "rec_id"),
        (IMPRESSION, {"rec_id": 12}, "wrong_type", "rec_id"),
        (IMPRESSION, {"rec_id": ["rec-1", "rec-2"]}, "wrong_type", "rec_id"),
        (IMPRESSION, {"rec_id": ""}, "bad_value", "rec_id"),
        (IMPRESSION, {"rec_id": "r" * 257}, "bad_value", "rec_id"),
        (IMPRESSION, {"rec_id": "r\x00"}, "bad_value", "rec_id"),
        (IMPRESSION, {"item_id": _DROP}, "missing_field", "item_id"),
        (IMPRESSION, {"item_id": ["i1", "i2"]}, "wrong_type", "item_id"),
        (IMPRESSION, {"type": "Impression"}, "bad_value", "type"),
        (IMPRESSION, {"type": "impressions"}, "bad_value", "type"),
        (IMPRESSION, {"ts": -1}, "bad_value", "ts"),
        (DISMISS, {"rec_id": 3}, "wrong_type", "rec_id"),
        (DISMISS, {"rec_id": ""}, "bad_value", "rec_id"),
        (DISMISS, {"event_id": _DROP}, "missing_field", "event_id"),
        (DISMISS, {"user_id": 1}, "wrong_type", "user_id"),
    ],
)
def test_bad_feedback_has_a_reason(
    base: dict[str, Any], changes: dict[str, Any], reason: str, field: str
) -> None:
    bad = _reason(_raw(base, **changes))
    assert bad.reason == reason
    assert field in bad.detail


def test_feedback_key_must_be_the_user() -> None:
    assert _reason(_raw(IMPRESSION), key=b"u2").reason == "key_mismatch"
    assert _reason(_raw(DISMISS), key=b"i1").reason == "key_mismatch"


def test_rec_id_lone_surrogate_is_bad_value() -> None:
    raw = _raw(IMPRESSION).replace(b'"rec-abc"', b'"\\ud800"')
    assert _reason(raw).reason == "bad_value"


@given(
    kind=st.sampled_from(FEEDBACK_TYPES),
    rec=st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t),
    item=st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t),
)
@settings(max_examples=60, deadline=None)
def test_feedback_round_trips(kind: str, rec: str, item: str) -> None:
    try:
        rec.encode("utf-8")
        item.encode("utf-8")
    except UnicodeEncodeError:
        return
    event = Event("e", "u", item, kind, TS, rec)  # type: ignore[arg-type]
    assert decode_event(encode_event(event), key=b"u") == event


# -- fold ----------------------------------------------------------------------------------


def test_feedback_never_enters_history_or_purchases() -> None:
    state = apply_event(EMPTY, _ev("e1", "a", ts=5), max_len=10)
    state = apply_event(state, _ev("e2", "b", "impression", ts=9, rec="r1"), max_len=10)
    state = apply_event(state, _ev("e3", "c", "dismiss", ts=7), max_len=10)
    assert state.history == ("a",)
    assert state.purchased == ()
    assert state.n_events == 1  # interactions only
    assert state.last_ts == 9  # any event
    assert state.dismissed == ("c",)
    assert state.impressions == (("b", 1),)


def test_impressions_count_until_a_click_or_purchase() -> None:
    state = EMPTY
    for n, item in enumerate(["a", "b", "a", "a", "b"]):
        state = apply_event(state, _ev(f"s{n}", item, "impression", rec="r"), max_len=10)
    assert state.impressions == (("a", 3), ("b", 2))  # least recently shown first
    state = apply_event(state, _ev("c1", "a"), max_len=10)
    assert state.impression_counts() == {"b": 2}
    state = apply_event(state, _ev("p1", "b", "purchase"), max_len=10)
    assert state.impressions == ()
    state = apply_event(state, _ev("s9", "a", "impression", rec="r"), max_len=10)
    assert state.impressions == (("a", 1),)  # counted afresh after the click


def test_dismiss_is_distinct_and_drops_the_impression_count() -> None:
    state = apply_event(EMPTY, _ev("s1", "a", "impression", rec="r"), max_len=10)
    state = apply_event(state, _ev("d1", "a", "dismiss"), max_len=10)
    state = apply_event(state, _ev("d2", "a", "dismiss"), max_len=10)
    assert state.dismissed == ("a",)
    assert state.impressions == ()


def test_feedback_state_is_bounded() -> None:
    state = EMPTY
    for n in range(MAX_IMPRESSED + 5):
        state = apply_event(state, _ev(f"s{n}", f"i{n}", "impression", rec="r"), max_len=10)
    assert len(state.impressions) == MAX_IMPRESSED
    assert state.impressions[0] == ("i5", 1)  # the least recently shown were forgotten
    state = apply_event(state, _ev("again", "i5", "impression", rec="r"), max_len=10)
    assert state.impressions[-1] == ("i5", 2)
    assert state.impressions[0] == ("i6", 1)
    state = UserState(dismissed=tuple(f"d{n}" for n in range(MAX_DISMISSED)))
    state = apply_event(state, _ev("dx", "new", "dismiss"), max_len=10)
    assert len(state.dismissed) == MAX_DISMISSED
    assert state.dismissed[-1] == "new"
    assert "d0" not in state.dismissed


_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(EVENT_TYPES),
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, 30),  # event id: repeats are duplicates
    ),
    max_size=60,
)


@given(_EVENTS)
@settings(max_examples=80, deadline=None)
def test_history_is_the_fold_of_interactions_alone(rows: list[tuple[str, str, int]]) -> None:
    """Feedback changes nothing the encoder, purchases or counts read, whatever the mix."""
    events = [_ev(f"e{eid}", item, kind, rec="r") for kind, item, eid in rows]
    with_feedback = fold_events(events, max_len=8).get("u1", EMPTY)
    seen: set[str] = set()
    interactions = []
    for e in events:
        if e.event_id not in seen:
            seen.add(e.event_id)
            if not e.is_feedback:
                interactions.append(e)
    alone = fold_events(interactions, max_len=8).get("u1", EMPTY)
    assert with_feedback.history == alone.history
    assert with_feedback.purchased == alone.purchased
    assert with_feedback.n_events == alone.n_events
    for item, shown in with_feedback.impressions:
        assert shown >= 1
        assert item not in with_feedback.dismissed
