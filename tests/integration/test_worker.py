"""The walking skeleton through the real broker: events in, recommendations out."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request

import pytest
from kafka.partitioner.default import murmur2
from support import producer, read_topic, running_worker, scrape, send_events

from streamrec.core.events import REASON_SOURCES, CatalogOp, Event
from streamrec.io.clients import ensure_topics
from streamrec.io.codec import encode_catalog, encode_event
from streamrec.ops.settings import Settings
from streamrec.ranking.modelfiles import read_model_dir

pytestmark = pytest.mark.broker


def _events(n: int, items: list[str], seed: int = 0) -> list[Event]:
    rng = random.Random(seed)
    users = [f"user-{u}" for u in range(40)]
    out = []
    for i in range(n):
        out.append(
            Event(
                event_id=f"evt-{seed}-{i}",
                user_id=rng.choice(users),
                item_id=rng.choice(items),
                type="purchase" if rng.random() < 0.25 else "click",
                ts=1_700_000_000_000 + i,
            )
        )
    return out


def _send_catalog(settings: Settings, ops: list[CatalogOp]) -> None:
    prod = producer(settings, linger_ms=0)
    for op in ops:
        # one record per batch: the embedded broker's end offsets are only right that way
        prod.send(settings.items_topic, key=op.item_id.encode(), value=encode_catalog(op)).get(30)
    prod.close()


def _purchased_after_each(events: list[Event]) -> dict[str, set[str]]:
    """For each event id, the items its user had purchased once the event was applied."""
    bought: dict[str, set[str]] = {}
    out = {}
    for e in events:
        mine = bought.setdefault(e.user_id, set())
        if e.type == "purchase":
            mine.add(e.item_id)
        out[e.event_id] = set(mine)
    return out


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_500_events_one_recommendation_each(settings: Settings, client: str) -> None:
    settings = settings.model_copy(update={"output_client": client})
    ensure_topics(settings, partitions=4)
    model = read_model_dir(settings.model_dir)
    items = model.item_ids
    deleted_before = items[:10]
    deleted_during = items[10:15]
    _send_catalog(settings, [CatalogOp(i, "delete", False, 1) for i in deleted_before])
    events = _events(500, items[:60])
    with running_worker(settings) as running:
        _send_catalog(settings, [CatalogOp(i, "delete", False, 2) for i in deleted_during])
        deadline = time.monotonic() + 20
        while any(running.worker.model.index.is_live(i) for i in deleted_during):
            assert time.monotonic() < deadline, "catalog deletes not applied within 20 s"
            time.sleep(0.05)
        send_events(settings, events)
        records = read_topic(settings.bootstrap_servers, settings.recs_topic, expected=500)
        metrics = scrape(running.url)

    messages = [json.loads(r.value) for r in records]
    assert len(messages) == 500
    by_event = {m["event_id"]: m for m in messages}
    assert set(by_event) == {e.event_id for e in events}, "each event answered exactly once"
    purchased = _purchased_after_each(events)
    user_of = {e.event_id: e.user_id for e in events}
    forbidden_everywhere = set(deleted_before) | set(deleted_during)
    for rec, msg in zip(records, messages, strict=True):
        assert rec.key == msg["user_id"].encode()
        # keys hashed with murmur2 by either client: a user's lists share one partition
        assert rec.partition == (murmur2(rec.key) & 0x7FFFFFFF) % 4
        assert msg["user_id"] == user_of[msg["event_id"]]
        assert msg["model_version"] == model.meta.version
        assert len(msg["items"]) == settings.top_k
        shown = {it["item_id"] for it in msg["items"]}
        assert not shown & purchased[msg["event_id"]], "a purchased item was recommended"
        assert not shown & forbidden_everywhere, "a deleted item was recommended"
        scores = [it["score"] for it in msg["items"] if not it["explored"]]
        assert scores == sorted(scores, reverse=True), "exploit slots are ranked by score"
        for it in msg["items"]:
            assert 0.0 < it["propensity"] <= 1.0
    assert len({m["rec_id"] for m in messages}) == 500

    consumed = sum(
        v
        for (name, labels), v in metrics.items()
        if name == "streamrec_events_consumed_total" and ("outcome", "recommended") in labels
    )
    assert consumed == 500
    assert metrics[("streamrec_recommendations_published_total", ())] == 500
    assert metrics[("streamrec_event_to_recommendation_seconds_count", ())] == 500
    assert metrics[("streamrec_index_items", ())] == len(items) - 15
    info = [k for k in metrics if k[0] == "streamrec_model_info"]
    assert info and ("version", model.meta.version) in info[0][1]


def test_poison_events_go_to_dlq_and_valid_ones_are_answered(settings: Settings) -> None:
    ensure_topics(settings, partitions=2)
    items = read_model_dir(settings.model_dir).item_ids
    valid = _events(40, items[:30], seed=3)
    poison = [
        (b"user-p", b"not json at all {"),
        (b"user-p", json.dumps({"event_id": "x", "user_id": "user-p", "type": "click"}).encode()),
        (
            b"user-p",
            json.dumps(
                {"event_id": "y", "user_id": "user-p", "item_id": 5, "type": "click", "ts": 1}
            ).encode(),
        ),
        (
            b"user-p",
            json.dumps(
                {
                    "event_id": "z",
                    "user_id": "user-p",
                    "item_id": "i1",
                    "type": "click",
                    "ts": "yesterday",
                }
            ).encode(),
        ),
        (b"user-p", b"[1, 2, 3]"),
        (b"user-p", b"\xff\xfe\x00 not utf8"),
        (b"user-p", b"{" + b" " * (1024 * 1024) + b"}"),
    ]
    expected_reasons = [
        "not_json",
        "missing_field",
        "wrong_type",
        "wrong_type",
        "not_object",
        "not_utf8",
        "too_large",
    ]
    prod = producer(settings, linger_ms=0, max_request_size=4 * 1024 * 1024)
    with running_worker(settings) as running:
        for i, event in enumerate(valid):
            prod.send(settings.events_topic, key=event.user_id.encode(), value=encode_event(event))
            if i % 6 == 0 and i // 6 < len(poison):
                key, value = poison[i // 6]
                prod.send(settings.events_topic, key=key, value=value)
        prod.flush(30)
        recs = read_topic(settings.bootstrap_servers, settings.recs_topic, expected=len(valid))
        dead = read_topic(settings.bootstrap_servers, settings.dlq_topic, expected=len(poison))
        assert running.alive(), "a poison event stopped the worker"
        metrics = scrape(running.url)
    prod.close()

    assert {json.loads(r.value)["event_id"] for r in recs} == {e.event_id for e in valid}
    assert len(recs) == len(valid)
    assert len(dead) == len(poison)
    reasons = sorted(dict(r.headers)["x-streamrec-error"].decode() for r in dead)
    assert reasons == sorted(expected_reasons)
    for r in dead:
        headers = dict(r.headers)
        assert headers["x-source-topic"].decode() == settings.events_topic
        assert int(headers["x-source-offset"].decode()) >= 0
        assert int(headers["x-source-partition"].decode()) in (0, 1)
    originals = {v for _, v in poison}
    assert {r.value for r in dead} == originals, "dead letters carry the original bytes"
    for reason in set(expected_reasons):
        key = (
            "streamrec_dead_letters_total",
            (("reason", reason), ("topic", settings.events_topic)),
        )
        assert metrics[key] == expected_reasons.count(reason)


def test_catalog_upsert_makes_a_new_item_searchable(settings: Settings) -> None:
    ensure_topics(settings, partitions=1)
    model = read_model_dir(settings.model_dir)
    with running_worker(settings) as running:
        index = running.worker.model.index
        target = model.item_vectors[0] * 3.0  # a new item that dominates item 0's neighbourhood
        _send_catalog(settings, [CatalogOp("brand-new", "upsert", True, 5, tuple(target.tolist()))])
        deadline = time.monotonic() + 20
        while not index.is_live("brand-new"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        event = Event("e-new-1", "user-x", model.item_ids[0], "click", 1)
        send_events(settings, [event])
        (rec,) = read_topic(settings.bootstrap_servers, settings.recs_topic, expected=1)
    assert running.worker.model.index.size == model.meta.num_items + 1
    assert "brand-new" in {it["item_id"] for it in json.loads(rec.value)["items"]}


def test_health_and_readiness_endpoints(settings: Settings) -> None:
    ensure_topics(settings, partitions=1)
    with running_worker(settings) as running:
        assert urllib.request.urlopen(running.url + "/healthz", timeout=5).status == 200
        assert urllib.request.urlopen(running.url + "/readyz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(running.url + "/nope", timeout=5)
        assert err.value.code == 404


def test_output_topic_is_readable_with_confluent_kafka(settings: Settings) -> None:
    """Subscribers use other clients: librdkafka must read our output as documented."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    ensure_topics(settings, partitions=2)
    items = read_model_dir(settings.model_dir).item_ids
    events = _events(20, items[:20], seed=9)
    with running_worker(settings):
        send_events(settings, events)
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": f"subscriber-{settings.group_id}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                # small group timeouts: the embedded broker's first join waits for them
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            }
        )
        consumer.subscribe([settings.recs_topic])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < len(events) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
        consumer.close()
    assert len(got) == len(events)
    user_of = {e.event_id: e.user_id for e in events}
    for msg in got:
        body = json.loads(msg.value())
        assert set(body) == {
            "rec_id",
            "user_id",
            "event_id",
            "items",
            "model_version",
            "generated_at",
        }
        assert msg.key().decode() == body["user_id"] == user_of[body["event_id"]]
        for it in body["items"]:  # an anchor exactly for co-visitation
            keys = {"item_id", "score", "propensity", "explored", "source"}
            assert set(it) == keys | ({"anchor"} if it["source"] == "covisit" else set())
            assert it["source"] in REASON_SOURCES
            assert (it["source"] == "explore") == it["explored"]
