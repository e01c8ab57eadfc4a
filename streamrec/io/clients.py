"""Kafka clients: construction with our defaults, topic creation, dead-letter records.

Only standard Kafka APIs are used, so Apache Kafka and the embedded broker work alike. Values
are kept as raw bytes (no kafka-python deserializers): decoding is ``events``' job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streamrec.errors import BrokerError
from streamrec.ops.settings import Settings

log = logging.getLogger(__name__)

PRODUCER_MAX_BLOCK_MS = 5000


def consumer_config(settings: Settings, group: bool = True) -> dict[str, Any]:
    """Keyword arguments of our KafkaConsumer (manual commits, small group timeouts)."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": max(1048576, settings.max_event_bytes * 4),
        # answer a fetch as soon as data is there, at most one poll timeout later
        "fetch_max_wait_ms": min(500, max(10, settings.poll_timeout_ms)),
        **settings.kafka_security(),
    }
    if group:
        cfg.update(
            group_id=settings.group_id,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            max_poll_records=settings.batch_max_events,
        )
    return cfg


def make_consumer(settings: Settings, group: bool = True) -> KafkaConsumer:
    """A consumer (not yet subscribed)."""
    try:
        return KafkaConsumer(**consumer_config(settings, group))
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {settings.bootstrap_servers}: {exc}") from exc


def make_producer(settings: Settings) -> KafkaProducer:
    """The output producer: waits for all in-sync replicas, retries, bounded in time.

    It writes to ``output_bootstrap_servers`` (default: the input cluster). A record not
    acknowledged within ``publish_timeout_ms`` fails; the outbox relay sends it again.
    """
    servers = settings.output_bootstrap_servers or settings.bootstrap_servers
    linger_ms = 5
    try:
        return KafkaProducer(
            bootstrap_servers=servers.split(","),
            client_id=settings.client_id,
            acks="all",
            retries=5,
            # not idempotent: on a broker whose idempotence is incomplete (the embedded one), a
            # retried batch answered DUPLICATE_SEQUENCE_NUMBER after a broker crash counts as
            # delivered although the broker lost it; we need no broker-side dedupe anyway
            # (output is at least once, deduplicated by rec_id)
            enable_idempotence=False,
            linger_ms=linger_ms,
            delivery_timeout_ms=settings.publish_timeout_ms,
            request_timeout_ms=min(30000, max(100, settings.publish_timeout_ms - linger_ms)),
            # send() blocks this long at most when the broker is unreachable (default 60 s);
            # only the relay thread sends, and a refused send is retried from the outbox
            max_block_ms=PRODUCER_MAX_BLOCK_MS,
            # dead letters carry the original record, whatever its size; a broker that refuses
            # it gets a truncated copy flagged x-streamrec-truncated (see worker.relay)
            max_request_size=16 * 1024 * 1024,
            **settings.kafka_security(),
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {servers}: {exc}") from exc


class OutputProducer(Protocol):
    """What the outbox relay uses of a producer (kafka-python's ``KafkaProducer`` and
    ``streamrec.io.confluent.ConfluentOutput`` both): ``send`` returns a future with
    ``add_callback`` / ``add_errback``."""

    def send(self, topic: str, *args: Any, **kwargs: Any) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


def make_output_producer(settings: Settings) -> OutputProducer:
    """The relay's producer: kafka-python's ``make_producer``, or with
    ``output_client=confluent-kafka`` the same contract on librdkafka
    (``streamrec.io.confluent``)."""
    if settings.output_client == "confluent-kafka":
        from streamrec.io.confluent import ConfluentOutput

        return ConfluentOutput(settings)
    return make_producer(settings)


def missing_topics(settings: Settings, names: Iterable[str], output: bool = False) -> list[str]:
    """Which of ``names`` do not exist (listing topics never creates one, unlike a send).

    Args:
        settings: connection settings.
        names: topic names to look for.
        output: look on the output cluster (``output_bootstrap_servers``).

    Raises:
        BrokerError: the cluster did not answer.
    """
    servers = (settings.output_bootstrap_servers if output else None) or settings.bootstrap_servers
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=servers.split(","),
            client_id=settings.client_id,
            **settings.kafka_security(),
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {servers}: {exc}") from exc
    try:
        existing = consumer.topics()
    except KafkaError as exc:
        raise BrokerError(f"listing topics on {servers} failed: {exc}") from exc
    finally:
        consumer.close()
    return sorted(set(names) - set(existing))


def broker_connected(consumer: KafkaConsumer) -> bool:
    """True while the consumer holds at least one live broker connection.

    kafka-python reconnects by itself and exposes no public "connected" flag, so this peeks at
    its network client; if that API moves, we answer True and rely on the errors raised by
    polls, sends and commits instead.
    """
    try:
        client = consumer._client
        return any(client.connected(b.node_id) for b in client.cluster.brokers())
    except Exception:  # a kafka-python upgrade changed the internals: do not claim an outage
        return True


def ensure_topics(settings: Settings, partitions: int = 4, replication: int = 1) -> list[str]:
    """Create the four topics (five with a signals topic) if they do not exist; return those
    created."""
    names = [settings.events_topic, settings.items_topic, settings.recs_topic, settings.dlq_topic]
    created = create_topics(settings, names, partitions, replication)
    if settings.signals_topic:
        retention = {"retention.ms": str(settings.signals_retention_ms)}
        created += create_topics(
            settings, [settings.signals_topic], partitions, replication, configs=retention
        )
    return created


def create_topics(
    settings: Settings,
    names: Iterable[str],
    partitions: int = 4,
    replication: int = 1,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create topics through the admin API, ignoring those that exist."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            client_id=settings.client_id,
            **settings.kafka_security(),
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {settings.bootstrap_servers}: {exc}") from exc
    created = []
    try:
        existing = set(admin.list_topics())
        for name in names:
            if name in existing:
                continue
            try:
                admin.create_topics(
                    [NewTopic(name, partitions, replication, topic_configs=configs or {})]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        raise BrokerError(f"creating topics failed: {exc}") from exc
    finally:
        admin.close()
    if created:
        log.info("created topics %s", ",".join(created))
    return created
