"""The output producer on confluent-kafka (librdkafka), for ``STREAMREC_OUTPUT_CLIENT``.

kafka-python builds and sends record batches in Python, on a thread that shares the GIL with
the worker's poll loop: in ``make bench`` publishing costs ~250-300 µs of Python per record,
the second largest share of the worker's time after ranking. librdkafka does that work on its
own native threads; a ``produce`` call costs a few microseconds of Python.

``ConfluentOutput`` offers what the outbox relay uses of kafka-python's ``KafkaProducer``
(``send`` returning a future with ``add_callback`` / ``add_errback``, ``flush``, ``close``), with
the same delivery contract: acks from all in-sync replicas, no broker-side idempotence (output is
at least once, deduplicated by ``rec_id``), a record not acked within ``publish_timeout_ms``
fails and the relay sends it again from the outbox. Failures are reported as kafka-python
exceptions (``MessageSizeTooLargeError`` for a record the broker or the client refuses as too
large, ``KafkaTimeoutError`` when the local queue is full, ``KafkaError`` otherwise), so the relay
treats both clients alike. Keys are partitioned with murmur2 as the Java client and kafka-python
do: a user's records land in the same partition whichever client the worker runs.

Delivery callbacks are served by a thread of the adapter (``poll``), as kafka-python's I/O
thread serves its futures. confluent-kafka is an optional dependency (``pip install
'streamrec[confluent]'``); importing this module without it raises ``ConfigError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from streamrec.errors import BrokerError, ConfigError
from streamrec.ops.settings import Settings

try:
    import confluent_kafka
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ConfigError(
        "STREAMREC_OUTPUT_CLIENT=confluent-kafka needs the confluent-kafka package: "
        "pip install 'streamrec[confluent]'"
    ) from exc

POLL_S = 0.05  # the callback thread waits this long for deliveries per poll
# ``Settings.kafka_security``'s kafka-python keyword -> librdkafka's property
_LIBRDKAFKA_SECURITY = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


class Delivery:
    """kafka-python's future of one send, as far as the relay uses it."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Any], object]] = []
        self._errbacks: list[Callable[[BaseException], object]] = []
        self._outcome: tuple[bool, Any] | None = None
        self._lock = threading.Lock()

    def add_callback(self, fn: Callable[[Any], object]) -> None:
        self._add(fn, ok=True)

    def add_errback(self, fn: Callable[[BaseException], object]) -> None:
        self._add(fn, ok=False)

    def _add(self, fn: Callable[[Any], object], ok: bool) -> None:
        with self._lock:
            if self._outcome is None:
                (self._callbacks if ok else self._errbacks).append(fn)
                return
            done_ok, value = self._outcome
        if done_ok == ok:  # settled before the callback was added
            fn(value)

    def settle(self, ok: bool, value: Any) -> None:
        with self._lock:
            self._outcome = (ok, value)
            fns = self._callbacks if ok else self._errbacks
            self._callbacks, self._errbacks = [], []
        for fn in fns:
            fn(value)


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings equivalent to ``clients.make_producer``'s for kafka-python."""
    servers = settings.output_bootstrap_servers or settings.bootstrap_servers
    linger_ms = 5
    cfg: dict[str, Any] = {
        "bootstrap.servers": servers,
        "client.id": settings.client_id,
        "acks": "all",
        "enable.idempotence": False,
        "message.send.max.retries": 5,
        "linger.ms": linger_ms,
        "message.timeout.ms": settings.publish_timeout_ms,
        "request.timeout.ms": min(30000, max(100, settings.publish_timeout_ms - linger_ms)),
        "message.max.bytes": 16 * 1024 * 1024,
        "partitioner": "murmur2_random",  # as the Java client and kafka-python hash keys
    }
    # the same security settings as every kafka-python client, under librdkafka's names
    for key, value in settings.kafka_security().items():
        if value is not None:
            cfg[_LIBRDKAFKA_SECURITY[key]] = value
    return cfg


class ConfluentOutput:
    """The relay's producer on librdkafka (module docstring)."""

    def __init__(self, settings: Settings) -> None:
        try:
            self._producer: Any = confluent_kafka.Producer(producer_config(settings))
        except confluent_kafka.KafkaException as exc:
            raise BrokerError(f"cannot configure the output producer: {exc}") from exc
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="output-callbacks", daemon=True)
        self._thread.start()

    def send(
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Delivery:
        """Queue one record; its ``Delivery`` settles when the broker acks or refuses it.

        Raises:
            MessageSizeTooLargeError: larger than the client accepts.
            KafkaTimeoutError: the local queue is full.
            KafkaError: any other refusal.
        """
        if self._closed.is_set():
            raise KafkaError("the output producer is closed")
        delivery = Delivery()

        def done(err: Any, msg: Any) -> None:
            if err is None:
                delivery.settle(True, msg)
            else:
                delivery.settle(False, _as_kafka_error(err))

        try:
            self._producer.produce(
                topic, value=value, key=key, headers=list(headers), on_delivery=done
            )
        except BufferError as exc:
            raise KafkaTimeoutError(f"output queue full: {exc}") from exc
        except confluent_kafka.KafkaException as exc:
            raise _as_kafka_error(exc.args[0]) from exc
        return delivery

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is acked or failed (at most ``timeout`` seconds)."""
        if not self._closed.is_set():
            self._producer.flush(-1 if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, then stop: records still
        queued are dropped here (their futures fail; their rows stay in the outbox), so that
        stopping never waits on an unreachable broker."""
        if self._closed.is_set():
            return
        try:
            self.flush(2.0 if timeout is None else timeout)
        finally:
            self._closed.set()
            self._thread.join(POLL_S * 4)
            self._producer.purge()
            self._producer.poll(0)
            # librdkafka's threads (and their reconnect attempts, logged on stderr) end when
            # the handle is released; a send after close fails (``send``)
            self._producer = None

    def _serve(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(POLL_S)


def _as_kafka_error(err: Any) -> KafkaError:
    """A librdkafka error as the kafka-python exception the relay tells apart."""
    code = err.code() if hasattr(err, "code") else None
    if code == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE:
        return MessageSizeTooLargeError(str(err))
    if code == confluent_kafka.KafkaError._MSG_TIMED_OUT:
        return KafkaTimeoutError(str(err))
    return KafkaError(str(err))
