"""Scenario 13: the same users' events on every partition (key-less and misrouted), two workers.

Exactly-once state must not rest on "one user lives in one partition": here each user's events
are spread over all partitions, some without a key, and two workers consume them at once on
PostgreSQL. The oracle (tests/faults/oracle.py) is independent of the production fold; the
order of one user's events over partitions is not defined, so histories compare as multisets.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from harness import DbProbe, World, check_exactly_once, make_events, report, wait_until
from kafka import KafkaProducer

from streamrec.core.events import Event
from streamrec.io.codec import encode_event
from streamrec.ranking.modelfiles import read_model_dir

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def _produce_misrouted(bootstrap: str, topic: str, events: list[Event], partitions: int) -> None:
    rng = random.Random(7)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for e in events:
        key = None if rng.random() < 0.3 else e.user_id.encode()  # 30 % key-less
        producer.send(topic, key=key, value=encode_event(e), partition=rng.randrange(partitions))
    producer.flush(timeout=60)
    producer.close(timeout=5)


def test_two_workers_with_misrouted_and_keyless_events(make_world: Callable[..., World]) -> None:
    world = make_world("postgresql")
    items = read_model_dir(world.model_dir).item_ids
    # few users, many events each (fewer than history_max_len): every user is on every partition
    events = make_events(1600, items, world.tag, users=12)
    distinct = len({e.event_id for e in events})
    probe = DbProbe(world)
    a = world.start_worker("a")
    wait_until(lambda: len(probe.generations()) == world.partitions, 60, "partitions not claimed")
    before = probe.generations()
    b = world.start_worker("b", ready=False)
    # both must hold partitions before the events arrive, or one worker may apply them alone
    # (b's rebalance still under way) and the workers never race
    wait_until(probe.settled(before, [a, b]), 60, "the group did not settle with a and b")
    _produce_misrouted(world.producer_bootstrap, world.topic("events"), events, world.partitions)
    probe.wait_done(distinct, 240, [a, b])
    outcome = check_exactly_once(world, events, ordered=False)
    conflicts = sum(
        w.metrics().get(("streamrec_errors_total", (("component", "conflict"),)), 0.0)
        for w in (a, b)
    )
    fenced = sum(
        w.metrics().get(("streamrec_errors_total", (("component", "fenced"),)), 0.0) for w in (a, b)
    )
    assert fenced == 0, "a conflict was treated as a fence"
    assert conflicts > 0, "the workers never raced: the test proved nothing"
    probe.close()
    faults = "2 workers, users on every partition"
    report("13 misrouted + key-less", "postgresql", outcome, faults, [])
