"""The ceiling of ``throughput.py``: a plain kafka-python consume -> decode -> produce loop.

The same broker, the same input records (the drain's backlog, from its first offsets), the
worker's producer settings and batch size; no database, no model. What the worker reaches is
read against this loop: it is the most a single Python thread gets through this broker.

Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import json
import time
from typing import Any

from harness import PARTITIONS, assigned_consumer, say
from kafka.structs import TopicPartition
from throughput_worker import read_records

from streamrec.io.clients import create_topics, make_producer
from streamrec.io.codec import decode_event
from streamrec.ops.settings import Settings

PASSTHROUGH_TOPIC = "streamrec.bench.passthrough"


def passthrough(
    settings: Settings, n: int, start: dict[int, int], timeout_s: float = 120.0
) -> dict[str, Any]:
    """Consume ``n`` input records from ``start`` (partition -> offset: the drain's first),
    decode, produce; events/s and a read-back count."""
    create_topics(settings, [PASSTHROUGH_TOPIC], PARTITIONS)
    consumer = assigned_consumer(settings.bootstrap_servers, settings.events_topic)
    for p, offset in start.items():
        consumer.seek(TopicPartition(settings.events_topic, p), offset)
    producer = make_producer(settings)
    say(f"ceiling: passthrough of {n:,} records ...")
    done = 0
    try:
        producer.send(PASSTHROUGH_TOPIC, key=b"warmup", value=b"{}").get(timeout=30)
        began = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while done < n and time.monotonic() < deadline:
            polled = consumer.poll(
                timeout_ms=settings.poll_timeout_ms, max_records=settings.batch_max_events
            )
            futures = []
            for batch in polled.values():
                for r in batch:
                    event = decode_event(r.value, r.key, settings.max_event_bytes)
                    value = json.dumps(
                        {"event_id": event.event_id, "user_id": event.user_id, "items": []},
                        separators=(",", ":"),
                    ).encode()
                    futures.append(producer.send(PASSTHROUGH_TOPIC, key=r.key, value=value))
            producer.flush(timeout=30)
            for fut in futures:
                fut.get(timeout=0)
            done += len(futures)
        seconds = time.perf_counter() - began
    finally:
        consumer.close()
        producer.close(timeout=5)
    # + the warm-up record; counted by reading, never from end offsets
    back, _ = read_records(settings.bootstrap_servers, PASSTHROUGH_TOPIC, done + 1, 60.0)
    return {
        "events": done,
        "seconds": seconds,
        "rate": done / seconds if seconds > 0 else float("nan"),
        "read_back": len(back) - 1,
    }
