"""One batch through decode -> fold -> encode -> search -> rank, with fakes (no broker, no DB)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrec.core.events import CatalogOp, Event, rec_id_for
from streamrec.core.history import UserState, apply_event, fold_events
from streamrec.io.codec import encode_event
from streamrec.ops.settings import Settings, load_settings
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.batch import AppliedEvent, OutboxMessage
from streamrec.state.memory import MemoryStateReader
from streamrec.testing import FakeClock, MeanEncoder, random_index
from streamrec.worker.catalog import apply_catalog_op
from streamrec.worker.step import Pipeline, Record

DIM = 8
K = 5
N_ITEMS = 40
TOPIC = "streamrec.events"
RECS = "streamrec.recommendations"
DLQ = "streamrec.events.dlq"
REC_KEYS = {"rec_id", "user_id", "event_id", "items", "model_version", "generated_at"}


def _settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"metrics_port": 0, "top_k": K, "db_url": "sqlite://"}
    base.update(overrides)
    return load_settings(**base)


def _pipeline(**overrides: Any) -> Pipeline:
    return Pipeline(
        _settings(**overrides),
        MeanEncoder(DIM, max_len=20),
        random_index(N_ITEMS, DIM, seed=1),
        model_version="v-test",
        clock=FakeClock(1_700_000_000.5),
    )


def _fused_pipeline(explore_rate: float = 0.0) -> Pipeline:
    encoder, index = MeanEncoder(DIM, max_len=20), random_index(N_ITEMS, DIM, seed=1)
    config = RankingConfig(k=K, explore_rate=explore_rate, seed=3)
    trained = [f"i{n}" for n in range(N_ITEMS)]
    ranker = Ranker(encoder, index, config, trained=trained)
    return Pipeline(_settings(), encoder, index, "v-test", FakeClock(), ranker=ranker)


def _ev(eid: str, user: str, item: str, kind: str = "click", ts: int = 1) -> Event:
    return Event(eid, user, item, kind, ts)  # type: ignore[arg-type]


class _Records:
    """Builds records with increasing offsets per partition."""

    def __init__(self, start: int = 100) -> None:
        self.next: dict[int, int] = {}
        self.start = start

    def __call__(self, value: bytes | None, key: bytes | None = None, partition: int = 0) -> Record:
        offset = self.next.get(partition, self.start)
        self.next[partition] = offset + 1
        return Record(TOPIC, partition, offset, key, value, timestamp_ms=1_000 + offset)

    def event(self, ev: Event, partition: int = 0) -> Record:
        return self(encode_event(ev), ev.user_id.encode(), partition)


def _recs(msgs: list[OutboxMessage]) -> list[OutboxMessage]:
    return [m for m in msgs if m.topic == RECS]


def _dlq(msgs: list[OutboxMessage]) -> list[OutboxMessage]:
    return [m for m in msgs if m.topic == DLQ]


def test_mixed_batch_recommendations_and_dead_letters() -> None:
    pipe = _pipeline()
    rec = _Records()
    good = [
        _ev("e1", "u1", "i1"),
        _ev("e2", "u1", "i2", "purchase"),
        _ev("e3", "u2", "i3", "purchase"),
    ]
    poison = [
        rec(b"not json", b"u9", partition=0),
        rec(None, b"u9", partition=1),
        rec(b'{"event_id":"e9","user_id":"u9","item_id":"i1","type":"view","ts":1}', None, 1),
        rec(encode_event(_ev("e8", "u8", "i1")), b"someone-else", partition=1),
        rec(b"\xff\xfe\x00garbage", None, partition=0),
    ]
    records = [rec.event(good[0]), poison[0], rec.event(good[1], 1), poison[1]]
    records += [poison[2], rec.event(good[2]), poison[3], poison[4]]
    write, stats = pipe.process(records, MemoryStateReader(), {0: 4, 1: 7})

    recs = _recs(write.messages)
    assert [json.loads(m.value)["event_id"] for m in recs] == ["e1", "e2", "e3"]  # type: ignore[arg-type]
    users = fold_events(good, 200)
    seen: dict[str, UserState] = {}
    for msg, ev in zip(recs, good, strict=True):
        seen[ev.user_id] = apply_event(seen.get(ev.user_id, UserState()), ev, 200)
        body = json.loads(msg.value)  # type: ignore[arg-type]
        assert set(body) == REC_KEYS
        assert body["rec_id"] == rec_id_for(ev.event_id)
        assert body["user_id"] == ev.user_id
        assert msg.key == ev.user_id.encode()
        assert body["model_version"] == "v-test"
        assert body["generated_at"] == 1_700_000_000_500
        assert len(body["items"]) == K
        ids = [it["item_id"] for it in body["items"]]
        assert len(set(ids)) == K
        assert all(
            set(it) == {"item_id", "score", "propensity", "explored"} for it in body["items"]
        )
        scores = [it["score"] for it in body["items"]]
        assert scores == sorted(scores, reverse=True)
        # snapshot at this event: purchases (and history, by default) never recommended
        assert not set(ids) & set(seen[ev.user_id].purchased)
        assert not set(ids) & set(seen[ev.user_id].history)
    # e2's list excludes i2, purchased in that very event
    assert "i2" not in [it["item_id"] for it in json.loads(recs[1].value)["items"]]  # type: ignore[arg-type]

    dead = _dlq(write.messages)
    assert len(dead) == len(poison)
    by_offset = {(m.partition, dict(m.headers)["x-source-offset"]): m for m in dead}
    expected_reasons = ["not_json", "missing_value", "bad_value", "key_mismatch", "not_utf8"]
    for src, reason in zip(poison, expected_reasons, strict=True):
        msg = by_offset[(src.partition, str(src.offset).encode())]
        headers = dict(msg.headers)
        assert headers["x-streamrec-error"] == reason.encode()
        assert headers["x-source-topic"] == TOPIC.encode()
        assert headers["x-source-partition"] == str(src.partition).encode()
        assert msg.value == src.value  # the original bytes, untouched
        assert msg.key == src.key
        assert msg.event_ts_ms == src.timestamp_ms
    assert sum(stats.dead_letters.values()) == len(poison)
    assert stats.dead_letters["not_json"] == 1

    assert write.topic == TOPIC
    assert write.generations == {0: 4, 1: 7}
    assert write.next_offsets == {0: rec.next[0], 1: rec.next[1]}
    assert write.users == users
    assert write.existing_users == set()
    assert [a.event.event_id for a in write.applied] == ["e1", "e2", "e3"]
    assert write.applied[1] == AppliedEvent(good[1], 1, records[2].offset)


def test_next_offsets_count_poison_and_duplicates() -> None:
    pipe = _pipeline()
    records = [
        Record(TOPIC, 3, 41, None, b"junk", 0),
        Record(TOPIC, 3, 40, b"u1", encode_event(_ev("e1", "u1", "i1")), 0),
        Record(TOPIC, 5, 7, None, b"junk", 0),
    ]
    write, _ = pipe.process(records, MemoryStateReader(), {3: 1, 5: 1, 9: 1})
    assert write.next_offsets == {3: 42, 5: 8}
    assert write.generations == {3: 1, 5: 1}


def test_duplicates_produce_no_message() -> None:
    pipe = _pipeline()
    reader = MemoryStateReader()
    reader.applied_ids = {"old"}
    reader.users = {"u1": UserState(history=("i9",), purchased=("i9",), n_events=1, last_ts=5)}
    rec = _Records()
    records = [
        rec.event(_ev("old", "u1", "i4")),  # applied in an earlier batch
        rec.event(_ev("e1", "u1", "i5", "purchase", ts=9)),
        rec.event(_ev("e1", "u1", "i5", "purchase", ts=9)),  # duplicate within the batch
        rec.event(_ev("e2", "u2", "i6")),
        rec.event(_ev("e2", "u2", "i6")),
    ]
    write, stats = pipe.process(records, reader, {0: 1})
    assert [json.loads(m.value)["event_id"] for m in write.messages] == ["e1", "e2"]  # type: ignore[arg-type]
    assert stats.outcomes[("click", "duplicate")] == 2
    assert stats.outcomes[("purchase", "duplicate")] == 1
    assert stats.outcomes[("purchase", "recommended")] == 1
    assert [a.event.event_id for a in write.applied] == ["e1", "e2"]
    assert write.existing_users == {"u1"}
    assert write.users["u1"] == UserState(
        history=("i9", "i5"), purchased=("i9", "i5"), n_events=2, last_ts=9
    )
    items = [it["item_id"] for it in json.loads(write.messages[0].value)["items"]]  # type: ignore[arg-type]
    assert not {"i9", "i5"} & set(items)
    assert write.next_offsets == {0: 105}


def test_only_duplicates_still_advance_offsets() -> None:
    pipe = _pipeline()
    reader = MemoryStateReader()
    reader.applied_ids = {"e1"}
    write, _ = pipe.process(
        [Record(TOPIC, 0, 8, b"u1", encode_event(_ev("e1", "u1", "i1")), 0)], reader, {0: 2}
    )
    assert write.messages == []
    assert write.users == {}
    assert write.applied == []
    assert write.next_offsets == {0: 9}


def test_exclude_history_off_allows_history_items_but_never_purchases() -> None:
    pipe = _pipeline(exclude_history=False, top_k=N_ITEMS)
    reader = MemoryStateReader()
    reader.users = {"u1": UserState(history=("i1", "i2", "i3"), purchased=("i2",), n_events=3)}
    write, _ = pipe.process([_Records().event(_ev("e1", "u1", "i4"))], reader, {0: 1})
    items = [it["item_id"] for it in json.loads(write.messages[0].value)["items"]]  # type: ignore[arg-type]
    assert "i2" not in items
    assert {"i1", "i3", "i4"} <= set(items)
    assert len(items) == N_ITEMS - 1


def test_unknown_item_policy_dlq() -> None:
    events = [_ev("e1", "u1", "not-in-index"), _ev("e2", "u1", "i3")]
    rec = _Records()
    records = [rec.event(e) for e in events]

    write, stats = _pipeline(unknown_item_policy="dlq").process(
        records, MemoryStateReader(), {0: 1}
    )
    (dead,) = _dlq(write.messages)
    assert dict(dead.headers)["x-streamrec-error"] == b"unknown_item"
    assert dead.value == records[0].value
    assert [json.loads(m.value)["event_id"] for m in _recs(write.messages)] == ["e2"]  # type: ignore[arg-type]
    assert stats.dead_letters["unknown_item"] == 1
    assert set(write.users) == {"u1"}
    assert write.users["u1"].history == ("i3",)

    write, _ = _pipeline().process(records, MemoryStateReader(), {0: 1})  # default: accept
    assert len(_recs(write.messages)) == 2
    # an unknown first item leaves no known vector: the centroid still yields k items
    first = json.loads(_recs(write.messages)[0].value)  # type: ignore[arg-type]
    assert len(first["items"]) == K


def test_removed_items_never_appear() -> None:
    pipe = _pipeline(top_k=15, exclude_history=False)
    removed = {f"i{n}" for n in range(0, N_ITEMS, 2)}
    for item in removed:
        pipe.index.remove(item)
    rec = _Records()
    records = [rec.event(_ev(f"e{n}", f"u{n % 4}", f"i{n % N_ITEMS}")) for n in range(30)]
    write, _ = pipe.process(records, MemoryStateReader(), {0: 1})
    recs = _recs(write.messages)
    assert len(recs) == 30
    for msg in recs:
        items = [it["item_id"] for it in json.loads(msg.value)["items"]]  # type: ignore[arg-type]
        assert not set(items) & removed
        assert len(items) == 15


def test_fewer_live_items_than_k() -> None:
    pipe = _pipeline(top_k=10)
    for n in range(N_ITEMS - 4):
        pipe.index.remove(f"i{n}")
    write, _ = pipe.process([_Records().event(_ev("e1", "u1", "i0"))], MemoryStateReader(), {0: 1})
    items = [it["item_id"] for it in json.loads(write.messages[0].value)["items"]]  # type: ignore[arg-type]
    assert sorted(items) == sorted(f"i{n}" for n in range(N_ITEMS - 4, N_ITEMS))


def test_empty_batch() -> None:
    write, stats = _pipeline().process([], MemoryStateReader(), {})
    assert write.messages == [] and write.users == {} and write.next_offsets == {}
    assert not stats.dead_letters


@given(
    st.lists(
        st.tuples(
            st.integers(0, 8),  # event id (repeats are replays)
            st.sampled_from(["u1", "u2", "u3"]),
            st.integers(0, N_ITEMS - 1),
            st.sampled_from(["click", "purchase"]),
            st.integers(0, 2),  # partition
        ),
        min_size=1,
        max_size=25,
    ),
    st.integers(1, 6),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_state_equals_reference_fold(rows: list[tuple[int, str, int, str, int]], cap: int) -> None:
    pipe = _pipeline(history_max_len=cap)
    rec = _Records(start=0)
    events = [_ev(f"e{e}", u, f"i{i}", kind, ts=e) for e, u, i, kind, _ in rows]
    records = [rec.event(ev, p) for ev, (*_, p) in zip(events, rows, strict=True)]
    write, _ = pipe.process(records, MemoryStateReader(), {0: 1, 1: 1, 2: 1})
    assert write.users == fold_events(events, cap)
    recs = _recs(write.messages)
    assert len(recs) == len({ev.event_id for ev in events})
    # each recommendation excludes what that user had purchased by then
    state: dict[str, UserState] = {}
    seen: set[str] = set()
    bodies = iter(recs)
    for ev in events:
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        state[ev.user_id] = apply_event(state.get(ev.user_id, UserState()), ev, cap)
        body = json.loads(next(bodies).value)  # type: ignore[arg-type]
        assert body["event_id"] == ev.event_id
        items = {it["item_id"] for it in body["items"]}
        assert not items & set(state[ev.user_id].purchased)
        assert not items & set(state[ev.user_id].history)
        assert len(items) == K


def test_surrogate_id_is_dead_lettered_and_batch_goes_on() -> None:
    raw = b'{"event_id":"e\\ud800","user_id":"u1","item_id":"i1","type":"click","ts":1}'
    records = [
        Record(TOPIC, 0, 0, None, raw, 0),
        _Records(start=1).event(_ev("e2", "u1", "i2")),
    ]
    write, _ = _pipeline().process(records, MemoryStateReader(), {0: 1})
    assert len(_dlq(write.messages)) == 1
    assert len(_recs(write.messages)) == 1


def test_fused_stats_count_new_item_vectors_and_slots_by_source_and_item_kind() -> None:
    pipe = _fused_pipeline()
    assert pipe.ranker is not None
    announced = CatalogOp("fresh", "upsert", True, 0)  # the catalog knows it (no vector)
    apply_catalog_op(pipe.index, announced)
    pipe.ranker.observe_catalog(announced)
    rec = _Records()
    # u1's "fresh" (never trained) co-occurs with i1..i3: its vector is written in this batch,
    # and u2, who clicks the same items, is shown it in the same batch
    events = [_ev(f"a{n}", "u1", item) for n, item in enumerate(["i1", "i2", "i3", "fresh"])]
    events += [_ev(f"b{n}", "u2", item) for n, item in enumerate(["i1", "i2", "i3"])]
    write, stats = pipe.process([rec.event(e) for e in events], MemoryStateReader(), {0: 1})

    assert stats.new_item_vectors == 1
    assert pipe.ranker is not None and pipe.ranker.new_items.searchable == 1
    assert sum(stats.slots.values()) == K * len(events)
    shown = [s for _, items in pipe.last_shown for s in items]
    new_shown = sum(1 for s in shown if s.item_id == "fresh")
    assert new_shown >= 1
    assert sum(n for (_, kind), n in stats.slots.items() if kind == "new") == new_shown
    assert {source for source, _ in stats.slots} <= {"ann", "trending", "covisit"}
    for source in {s.source for s in shown}:
        assert stats.slots[(source, "trained")] + stats.slots[(source, "new")] == sum(
            1 for s in shown if s.source == source
        )
    assert len(_recs(write.messages)) == len(events)


def test_explored_slots_count_as_explore() -> None:
    pipe = _fused_pipeline(explore_rate=0.5)
    rec = _Records()
    events = [_ev(f"e{n}", f"u{n % 3}", f"i{(n * 7) % N_ITEMS}") for n in range(30)]
    _, stats = pipe.process([rec.event(e) for e in events], MemoryStateReader(), {0: 1})
    explored = sum(1 for _, items in pipe.last_shown for s in items if s.explored)
    assert explored > 0
    assert stats.slots[("explore", "trained")] == explored
    assert stats.new_item_vectors == 0


def test_encoder_ranking_counts_encoder_slots_and_tells_new_items_apart() -> None:
    trained = [f"i{n}" for n in range(N_ITEMS - 5)]  # the last five came from the catalog
    pipe = Pipeline(
        _settings(top_k=N_ITEMS - 1),
        MeanEncoder(DIM, max_len=20),
        random_index(N_ITEMS, DIM, seed=1),
        "v-test",
        FakeClock(),
        trained=trained,
    )
    _, stats = pipe.process([_Records().event(_ev("e1", "u1", "i1"))], MemoryStateReader(), {0: 1})
    assert stats.slots == {("encoder", "trained"): N_ITEMS - 6, ("encoder", "new"): 5}
    assert stats.new_item_vectors == 0
    # without a list of trained items every item counts as trained
    _, stats = _pipeline().process(
        [_Records().event(_ev("e1", "u1", "i1"))], MemoryStateReader(), {0: 1}
    )
    assert stats.slots == {("encoder", "trained"): K}


class _NanEncoder(MeanEncoder):
    """An encoder gone wrong: every user vector is NaN."""

    def encode(self, histories: Any) -> Any:
        out = super().encode(histories)
        out[:] = float("nan")
        return out


def test_a_non_finite_score_is_dead_lettered_never_published() -> None:
    pipeline = Pipeline(
        _settings(),
        _NanEncoder(DIM, max_len=20),
        random_index(N_ITEMS, DIM, seed=1),
        model_version="v-test",
        clock=FakeClock(1_700_000_000.5),
    )
    records = _Records()
    write, stats = pipeline.process(
        [records.event(_ev("e1", "u1", "i1"))], MemoryStateReader(), {0: 1}
    )
    assert _recs(write.messages) == []
    (dead,) = _dlq(write.messages)
    assert dict(dead.headers)["x-streamrec-error"] == b"bad_score"
    assert stats.dead_letters["bad_score"] == 1
    assert write.users["u1"].history == ("i1",), "the event is applied all the same"
    for msg in write.messages:
        json.loads(msg.value or b"{}")  # whatever is written is strict JSON
