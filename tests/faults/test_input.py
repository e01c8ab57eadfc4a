"""Scenarios 8 and 9: poison pills in a valid stream; replay of the whole topic."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

import pytest
from harness import (
    DbProbe,
    Stream,
    World,
    check_exactly_once,
    make_events,
    read_topic,
    records_of,
    report,
    wait_until,
)

from streamrec.ranking.modelfiles import read_model_dir

pytestmark = pytest.mark.broker
DAY_MS = 86_400_000


def _poison(now_ms: int, item: str) -> list[tuple[str, bytes, bytes]]:
    def ev(**fields: object) -> bytes:
        body = {"event_id": "p", "user_id": "up", "item_id": item, "type": "click", "ts": now_ms}
        body.update(fields)
        return json.dumps(body).encode()

    return [
        ("not_json", b"up", b"not json {"),
        ("not_utf8", b"up", b"\xff\xfe\x00"),
        ("not_object", b"up", b"[1, 2, 3]"),
        ("missing_field", b"up", json.dumps({"event_id": "p", "user_id": "up"}).encode()),
        ("wrong_type", b"up", ev(item_id=5)),
        ("too_large", b"up", ev(pad="x" * 3000)),
        ("bad_value", b"u" * 100, ev(user_id="u" * 100)),
        ("key_mismatch", b"someone-else", ev()),
        ("unknown_item", b"up", ev(item_id="no-such-item")),
        ("ts_in_future", b"up", ev(ts=now_ms + 2 * DAY_MS)),
        ("ts_too_old", b"up", ev(ts=1000)),
    ]


def test_poison_pills_in_a_valid_stream(make_world: Callable[..., World]) -> None:
    world = make_world(
        "sqlite",
        STREAMREC_MAX_EVENT_BYTES="2048",
        STREAMREC_MAX_ID_LEN="64",
        STREAMREC_UNKNOWN_ITEM_POLICY="dlq",
        STREAMREC_MAX_EVENT_AGE_MS=str(30 * DAY_MS),
    )
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(2000, items, world.tag)
    pills = _poison(int(time.time() * 1000), items[0])
    records = records_of(events)
    expected: Counter[str] = Counter()
    for n in range(3):  # each pill three times, spread through the stream
        for i, (reason, key, value) in enumerate(pills):
            at = (n * len(pills) + i + 1) * len(records) // (3 * len(pills) + 1)
            records.insert(at, (key, value))
            expected[reason] += 1
    worker = world.start_worker("w0")
    probe = DbProbe(world)
    with Stream(world.producer_bootstrap, world.topic("events"), records, rate=1000):
        pass
    start = time.monotonic()
    probe.wait_done(len({e.event_id for e in events}), 120, [worker])
    outcome = check_exactly_once(world, events)
    dead = read_topic(world.bootstrap, world.topic("dlq"), lambda got: len(got) >= 33)
    got = Counter(dict(r.headers)["x-streamrec-error"].decode() for r in dead)
    assert got == expected
    for r in dead:
        assert dict(r.headers)["x-source-topic"].decode() == world.topic("events")
    metrics = worker.metrics()
    for reason, count in expected.items():
        key = (
            "streamrec_dead_letters_total",
            (("reason", reason), ("topic", world.topic("events"))),
        )
        assert metrics[key] == count, reason
    assert worker.proc.poll() is None
    report(
        "8 poison pills",
        "sqlite",
        outcome,
        f"{sum(expected.values())} pills, {len(expected)} reasons",
        [time.monotonic() - start],
    )


def test_replay_from_offset_zero_changes_nothing(make_world: Callable[..., World]) -> None:
    """A second group replays the whole topic into the same database: state and output unchanged."""
    world = make_world("sqlite")
    items = read_model_dir(world.model_dir).item_ids
    events = make_events(2000, items, world.tag)
    records = records_of(events)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    worker = world.start_worker("w0")
    with Stream(world.producer_bootstrap, world.topic("events"), records, rate=0):
        pass
    probe.wait_done(distinct, 120, [worker])
    outcome = check_exactly_once(world, events)
    assert worker.terminate()[0] == 0
    with world.store() as store:
        before = store.all_users()
    applied = probe.applied()
    outputs = outcome.outputs
    replay_group = f"{world.group_id}-replay"
    start = time.monotonic()
    replayer = world.start_worker("replay", group_id=replay_group)
    wait_until(
        lambda: sum(probe.next_offsets(replay_group).values()) >= len(records),
        120,
        "replay did not reach the end of the topic",
    )
    recovery = [time.monotonic() - start]
    assert replayer.terminate()[0] == 0
    with world.store() as store:
        assert store.all_users() == before, "replay changed the state"
    assert probe.applied() == applied
    assert probe.outbox() == 0
    again = check_exactly_once(world, events)
    assert again.outputs == outputs, "replay published new recommendations"
    probe.close()
    report("9 replay from 0", "sqlite", again, f"replay of {len(records)} records", recovery)
