"""``streamrec demo``: everything on one machine, printing recommendations as they arrive."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from streamrec.io.broker import EmbeddedBroker
from streamrec.io.clients import ensure_topics
from streamrec.io.simulate import SimConfig, Simulator
from streamrec.io.traffic import produce_catalog, produce_events, write_events
from streamrec.ops.settings import load_settings
from streamrec.ranking.modelfiles import META_FILE
from streamrec.worker import Worker

TRAIN_EVENTS = 20000


@dataclass(frozen=True)
class DemoOptions:
    """Demo knobs (see ``streamrec demo --help``).

    ``duration`` is seconds of traffic, counted once the model is ready and the broker is up
    (0: until ``stop`` is set).
    """

    workdir: Path
    port: int
    metrics_port: int
    rate: float
    epochs: int | None
    show: int
    duration: float = 0.0


def _ensure_model(workdir: Path, epochs: int | None) -> Path:
    model_dir = workdir / "model"
    if (model_dir / META_FILE).is_file():
        click.echo(f"model: reusing {model_dir} (delete it to retrain)")
        return model_dir
    data = workdir / "train.jsonl"
    write_events(data, Simulator(SimConfig(seed=0)).events(TRAIN_EVENTS))
    click.echo(f"training a small SASRec model on {TRAIN_EVENTS} simulated events ...")
    from streamrec.training.train import TrainConfig, train_file

    start = time.monotonic()
    summary = train_file(data, model_dir, TrainConfig(epochs=epochs, progress=True))
    click.echo(f"model {summary['version']} trained in {time.monotonic() - start:.0f}s")
    return model_dir


def _print_recommendations(bootstrap: str, topic: str, show: int, stop: threading.Event) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = None
    while not parts and not stop.is_set():
        parts = consumer.partitions_for_topic(topic)
        time.sleep(0.2)
    consumer.assign([TopicPartition(topic, p) for p in sorted(parts or [])])
    shown = 0
    total = 0
    last_report = time.monotonic()
    while not stop.is_set():
        for batch in consumer.poll(timeout_ms=500).values():
            for rec in batch:
                total += 1
                if shown < show and total % 10 == 1:
                    shown += 1
                    msg = json.loads(rec.value)
                    items = ", ".join(
                        f"{i['item_id']} ({i['score']:.2f})" for i in msg["items"][:5]
                    )
                    click.echo(f"  {msg['user_id']:>6} after {msg['event_id']}: {items} ...")
        if time.monotonic() - last_report > 10:
            click.echo(f"  ... {total} recommendations received so far")
            last_report = time.monotonic()
    consumer.close()


def wait_for_end(stop: threading.Event, duration: float) -> None:
    """Block until ``stop`` is set or ``duration`` seconds (0 or less: no limit) have passed.

    The clock starts at the call, not at process start. ``stop`` is set on return, so every
    thread watching it ends too.
    """
    stop.wait(duration if duration > 0 else None)
    stop.set()


def run_demo(opts: DemoOptions, stop: threading.Event) -> None:
    """Run the demo until ``stop`` is set or ``opts.duration`` seconds of traffic have passed."""
    opts.workdir.mkdir(parents=True, exist_ok=True)
    model_dir = _ensure_model(opts.workdir, opts.epochs)
    if stop.is_set():
        click.echo("stopped before the traffic started")
        return
    db = opts.workdir / "streamrec.db"
    for leftover in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
        leftover.unlink(missing_ok=True)  # the broker is memory-only: old offsets mean nothing
    with EmbeddedBroker(opts.port, log_path=opts.workdir / "broker.log") as broker:
        click.echo(f"broker: {broker.bootstrap} (embedded, memory only)")
        settings = load_settings(
            bootstrap_servers=broker.bootstrap,
            model_dir=model_dir,
            db_url=f"sqlite:///{db}",
            metrics_port=opts.metrics_port,
            log_level="WARNING",
        )
        ensure_topics(settings, partitions=4)
        sim = Simulator(SimConfig(seed=1))
        produce_catalog(broker.bootstrap, settings.items_topic, sim.catalog())
        worker_stop = threading.Event()
        worker = Worker(settings)

        def announce(server: object) -> None:
            url = getattr(server, "url", "(disabled)")
            click.echo(f"metrics: {url}/metrics   health: {url}/healthz   ready: {url}/readyz")

        threads = [
            threading.Thread(target=worker.run, args=(worker_stop, announce), daemon=True),
            threading.Thread(
                target=produce_events,
                args=(broker.bootstrap, settings.events_topic, sim.events(10**9)),
                kwargs={"rate": opts.rate, "realtime": True, "stop": stop},
                daemon=True,
            ),
            threading.Thread(
                target=_print_recommendations,
                args=(broker.bootstrap, settings.recs_topic, opts.show, stop),
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        until = f"for {opts.duration:g}s" if opts.duration > 0 else "until Ctrl-C"
        click.echo(f"simulating {opts.rate:g} events/s {until}; recommendations as they arrive:")
        wait_for_end(stop, opts.duration)  # the duration counts from here, once traffic flows
        click.echo("stopping ...")
        worker_stop.set()
        for t in threads:
            t.join(timeout=15)
    shutil.rmtree(opts.workdir / "tmp", ignore_errors=True)
    click.echo("demo stopped cleanly")
