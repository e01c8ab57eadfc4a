"""The optional confluent-kafka output producer keeps kafka-python's contract for the relay:
acked records settle their futures, a record too large is refused at once as
``MessageSizeTooLargeError``, an unreachable broker fails the record within
``publish_timeout_ms`` (the relay then sends it again from the outbox)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka.errors import KafkaError, MessageSizeTooLargeError
from kafka.partitioner.default import murmur2
from support import read_topic

from streamrec.io.broker import free_port
from streamrec.io.clients import create_topics, make_output_producer
from streamrec.io.confluent import ConfluentOutput
from streamrec.ops.settings import Settings

pytestmark = pytest.mark.broker


def _outcomes(future: Any) -> tuple[threading.Event, list[Any]]:
    done, seen = threading.Event(), []
    future.add_callback(lambda md: (seen.append(("ok", md)), done.set()))
    future.add_errback(lambda exc: (seen.append(("error", exc)), done.set()))
    return done, seen


def test_records_are_acked_keyed_like_kafka_python_and_readable(settings: Settings) -> None:
    settings = settings.model_copy(update={"output_client": "confluent-kafka"})
    create_topics(settings, ["out"], 4)
    producer = make_output_producer(settings)
    assert isinstance(producer, ConfluentOutput)
    keys = [f"user-{n}".encode() for n in range(40)]
    waits = [
        _outcomes(producer.send("out", key=k, value=b"v" + k, headers=[("h", b"1")])) for k in keys
    ]
    for done, seen in waits:
        assert done.wait(10) and seen[0][0] == "ok"
    producer.close(timeout=5)
    records = read_topic(settings.bootstrap_servers, "out", expected=len(keys))
    assert sorted(r.value for r in records) == sorted(b"v" + k for k in keys)
    for r in records:  # murmur2, as kafka-python and the Java client place keys
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 4
        assert list(r.headers) == [("h", b"1")]


def test_a_record_too_large_is_refused_at_once(settings: Settings) -> None:
    producer = ConfluentOutput(settings.model_copy(update={"output_client": "confluent-kafka"}))
    with pytest.raises(MessageSizeTooLargeError):
        producer.send("out", key=b"k", value=b"x" * (17 * 1024 * 1024))
    producer.close(timeout=1)


def test_an_unreachable_broker_fails_the_record_within_the_publish_timeout(
    settings: Settings,
) -> None:
    dead = settings.model_copy(
        update={
            "output_client": "confluent-kafka",
            "bootstrap_servers": f"127.0.0.1:{free_port()}",
            "publish_timeout_ms": 500,
        }
    )
    producer = ConfluentOutput(dead)
    done, seen = _outcomes(producer.send("out", key=b"k", value=b"v"))
    assert done.wait(10), "no outcome within 10 s"
    kind, exc = seen[0]
    assert kind == "error" and isinstance(exc, KafkaError)
    assert not isinstance(exc, MessageSizeTooLargeError)
    producer.close(timeout=0.5)
    producer.close(timeout=0.5)  # closing twice is harmless
    with pytest.raises(KafkaError):
        producer.send("out", key=b"k", value=b"v")
