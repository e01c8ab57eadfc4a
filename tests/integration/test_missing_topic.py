"""A missing output topic is reported at once, and readiness returns once it exists."""

from __future__ import annotations

import threading
import time

import pytest

from streamrec.io.clients import create_topics
from streamrec.ops.settings import Settings
from streamrec.worker import Worker
from streamrec.worker.loop import TOPIC_CHECK_INTERVAL_S

pytestmark = pytest.mark.broker


def _wait_ready_reason(worker: Worker, want: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    why = ""
    while time.monotonic() < deadline:
        why = worker.ready()[1]
        if want in why:
            return why
        time.sleep(0.1)
    raise AssertionError(f"/readyz never said {want!r}; last: {why!r}")


def test_missing_output_topic_fails_readiness_until_created(settings: Settings) -> None:
    # everything but the output topic (never auto-created: no event is sent here)
    create_topics(settings, [settings.events_topic, settings.items_topic, settings.dlq_topic])
    worker = Worker(settings)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        why = _wait_ready_reason(worker, "output topic missing", 30)
        assert settings.recs_topic in why and not worker.ready()[0]
        create_topics(settings, [settings.recs_topic])
        _wait_ready_reason(worker, "ready:", TOPIC_CHECK_INTERVAL_S + 20)
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()
