"""The pure fold of events into user state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.core.events import Event
from streamrec.core.history import EMPTY, MAX_PURCHASED, UserState, apply_event, fold_events


def _ev(eid: str, item: str, kind: str = "click", ts: int = 0, user: str = "u1") -> Event:
    return Event(event_id=eid, user_id=user, item_id=item, type=kind, ts=ts)  # type: ignore[arg-type]


def test_apply_event_appends_to_history_and_counts() -> None:
    state = apply_event(EMPTY, _ev("e1", "a", ts=10), max_len=5)
    state = apply_event(state, _ev("e2", "b", ts=20), max_len=5)
    assert state == UserState(history=("a", "b"), purchased=(), n_events=2, last_ts=20)


def test_apply_event_caps_history_keeping_most_recent() -> None:
    state = EMPTY
    for i in range(7):
        state = apply_event(state, _ev(f"e{i}", f"i{i}"), max_len=3)
    assert state.history == ("i4", "i5", "i6")
    assert state.n_events == 7  # not capped


def test_history_keeps_repeats_but_purchases_are_deduplicated() -> None:
    state = EMPTY
    for i, item in enumerate(["a", "b", "a", "a"]):
        state = apply_event(state, _ev(f"e{i}", item, "purchase"), max_len=10)
    assert state.history == ("a", "b", "a", "a")
    assert state.purchased == ("a", "b")


def test_clicks_are_not_purchases() -> None:
    state = apply_event(EMPTY, _ev("e1", "a", "click"), max_len=10)
    assert state.purchased == ()


def test_purchases_are_capped() -> None:
    state = UserState(purchased=tuple(f"p{i}" for i in range(MAX_PURCHASED)))
    state = apply_event(state, _ev("e1", "new", "purchase"), max_len=10)
    assert len(state.purchased) == MAX_PURCHASED
    assert state.purchased[-1] == "new"
    assert "p0" not in state.purchased


def test_last_ts_is_the_max_not_the_latest() -> None:
    state = apply_event(EMPTY, _ev("e1", "a", ts=100), max_len=5)
    state = apply_event(state, _ev("e2", "b", ts=40), max_len=5)
    assert state.last_ts == 100
    assert state.history == ("a", "b")  # arrival order, not event time


def test_apply_event_does_not_mutate_input() -> None:
    before = UserState(history=("x",), purchased=("x",), n_events=1, last_ts=1)
    apply_event(before, _ev("e1", "y", "purchase", ts=2), max_len=5)
    assert before == UserState(history=("x",), purchased=("x",), n_events=1, last_ts=1)


def test_fold_events_applies_each_event_id_once_per_user() -> None:
    evs = [
        _ev("e1", "a", user="u1", ts=1),
        _ev("e2", "b", user="u2", ts=2),
        _ev("e1", "zzz", user="u1", ts=99),  # replay with the same id: ignored
        _ev("e3", "c", "purchase", user="u1", ts=3),
    ]
    users = fold_events(evs, max_len=10)
    assert users == {
        "u1": UserState(history=("a", "c"), purchased=("c",), n_events=2, last_ts=3),
        "u2": UserState(history=("b",), purchased=(), n_events=1, last_ts=2),
    }


event_lists = st.lists(
    st.builds(
        _ev,
        eid=st.sampled_from([f"e{i}" for i in range(12)]),
        item=st.sampled_from(["a", "b", "c", "d"]),
        kind=st.sampled_from(["click", "purchase"]),
        ts=st.integers(0, 1000),
        user=st.sampled_from(["u1", "u2", "u3"]),
    ),
    max_size=30,
)


@given(event_lists, st.integers(1, 5), st.randoms(use_true_random=False))
@settings(max_examples=200)
def test_fold_with_duplicates_equals_fold_of_first_occurrences(
    evs: list[Event], max_len: int, rnd: object
) -> None:
    first: dict[str, Event] = {}
    for ev in evs:
        first.setdefault(ev.event_id, ev)
    unique = list(first.values())  # first occurrences, in order
    # Re-insert random copies of already-seen events after their first occurrence.
    noisy = list(unique)
    for ev in unique:
        pos = noisy.index(ev) + 1
        for _ in range(rnd.randint(0, 2)):  # type: ignore[attr-defined]
            noisy.insert(rnd.randint(pos, len(noisy)), ev)  # type: ignore[attr-defined]
    assert fold_events(noisy, max_len) == fold_events(unique, max_len)
    assert fold_events(evs, max_len) == fold_events(unique, max_len)
    total = sum(s.n_events for s in fold_events(unique, max_len).values())
    assert total == len(unique)
