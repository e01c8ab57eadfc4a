"""Command line: ``streamrec broker | run | publish | simulate | topics | demo | train |
evaluate``.

Settings come from ``config.load_settings``: flags override ``STREAMREC_*`` variables, which
override the defaults. Errors of the streamrec tree become one clear line and exit code 2.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streamrec.errors import StreamrecError
from streamrec.evaluation.cli import ope, replay
from streamrec.ops.logs import setup_logging
from streamrec.training.cli import evaluate, train

log = logging.getLogger("streamrec")


def _fail(exc: StreamrecError) -> click.ClickException:
    return click.ClickException(f"{type(exc).__name__}: {exc}")


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM only set the stop flag; the loop drains and exits."""

    def handler(signum: int, _frame: object) -> None:
        log.info("signal %s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@click.group()
@click.version_option(package_name="streamrec")
def cli() -> None:
    """streamrec: streaming recommendations from Kafka events."""


cli.add_command(train)
cli.add_command(evaluate)
cli.add_command(replay)
cli.add_command(ope)


@cli.command()
@click.option("--port", default=9092, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--durable",
    is_flag=True,
    help="keep the data in S3 (a local moto server, pip install 'moto[server]') instead of "
    "memory, so that the broker survives kill -9 and restarts with every record",
)
@click.option("--s3-endpoint", help="use this S3-compatible server (bucket 'streamrec') instead")
def broker(port: int, host: str, durable: bool, s3_endpoint: str | None) -> None:
    """Run the embedded Kafka-compatible broker in the foreground (memory only by default)."""
    from streamrec.io.broker import EmbeddedBroker

    embedded = EmbeddedBroker(port, host, durable=durable, s3_endpoint=s3_endpoint)
    try:
        embedded.start()
    except StreamrecError as exc:
        raise _fail(exc) from None
    if embedded.durable:
        where = s3_endpoint or "a local S3 server (moto) started beside it"
        kept = f"data kept in S3 at {where}: survives a broker crash, not the S3 server's stop"
    else:
        kept = "memory only"
    click.echo(f"embedded broker on {host}:{port} ({kept}; Ctrl-C stops it)", err=True)
    stop = threading.Event()
    install_stop_handlers(stop)
    try:
        while not stop.wait(1.0):
            if not embedded.running():
                raise click.ClickException("the embedded broker exited")
    finally:
        embedded.stop()


def _settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--bootstrap-servers", help="HOST:PORT[,...] [env STREAMREC_BOOTSTRAP_SERVERS]"
        ),
        click.option(
            "--model",
            "model_dir",
            type=click.Path(path_type=Path),
            help="model directory, or a repository of numbered versions "
            "[env STREAMREC_MODEL_DIR; default ./model]",
        ),
        click.option("--db-url", help="SQLAlchemy URL [env STREAMREC_DB_URL; default SQLite file]"),
        click.option("--group-id", help="consumer group [env STREAMREC_GROUP_ID]"),
        click.option(
            "--metrics-host", help="bind address of /metrics [env STREAMREC_METRICS_HOST]"
        ),
        click.option("--metrics-port", type=int, help="0 disables [env STREAMREC_METRICS_PORT]"),
        click.option("--top-k", type=int, help="items per recommendation [env STREAMREC_TOP_K]"),
        click.option("--batch-max-events", type=int, help="[env STREAMREC_BATCH_MAX_EVENTS]"),
        click.option("--log-level", help="DEBUG|INFO|WARNING|ERROR [env STREAMREC_LOG_LEVEL]"),
        click.option("--log-json/--no-log-json", default=None, help="[env STREAMREC_LOG_JSON]"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command()
@_settings_options
@click.option(
    "--create-topics/--no-create-topics",
    default=False,
    show_default=True,
    help="create the four topics if missing (admin API)",
)
@click.option(
    "--partitions",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="partitions of topics created with --create-topics",
)
def run(create_topics: bool, partitions: int, **overrides: Any) -> None:
    """Run the worker until SIGINT/SIGTERM."""
    from streamrec.io.clients import ensure_topics
    from streamrec.ops.settings import load_settings
    from streamrec.worker import Worker

    try:
        settings = load_settings(**overrides)
        setup_logging(settings.log_level, settings.log_json, secrets=settings.secret_values())
        if create_topics:
            ensure_topics(settings, partitions)
        stop = threading.Event()
        install_stop_handlers(stop)
        worker = Worker(settings)

        def announce(server: Any) -> None:
            if server is not None:
                log.info("metrics at %s/metrics", server.url)

        worker.run(stop, on_ready=announce)
    except StreamrecError as exc:
        raise _fail(exc) from None


@cli.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("repository", type=click.Path(file_okay=False, path_type=Path))
def publish(model: Path, repository: Path) -> None:
    """Copy the model directory MODEL into REPOSITORY as its next numbered version.

    The manifest (the source's checksums) is written last: a worker following REPOSITORY
    serves the version once it is complete, and refuses a copy that differs from MODEL.
    """
    from streamrec.ranking.repository import publish as publish_version

    try:
        number = publish_version(model, repository)
    except StreamrecError as exc:
        raise _fail(exc) from None
    click.echo(json.dumps({"repository": str(repository), "version": number}))


@cli.command()
@click.option("--events", "n_events", default=20000, show_default=True, type=click.IntRange(1))
@click.option("--users", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--items", default=500, show_default=True, type=click.IntRange(2))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(path_type=Path), help="write JSON lines here")
@click.option("--bootstrap-servers", help="produce to this broker instead of a file")
@click.option("--topic", default="streamrec.events", show_default=True)
@click.option("--catalog-topic", default=None, help="also publish an upsert for every item")
@click.option("--rate", default=0.0, show_default=True, help="events per second (0 = no limit)")
def simulate(
    n_events: int,
    users: int,
    items: int,
    seed: int,
    out: Path | None,
    bootstrap_servers: str | None,
    topic: str,
    catalog_topic: str | None,
    rate: float,
) -> None:
    """Synthetic shop traffic (seeded) to a JSON-lines file or a topic."""
    from streamrec.io.simulate import SimConfig, Simulator
    from streamrec.io.traffic import produce_catalog, produce_events, write_events

    sim = Simulator(SimConfig(users=users, items=items, seed=seed))
    if out is None and bootstrap_servers is None:
        raise click.UsageError("give --out FILE or --bootstrap-servers HOST:PORT")
    if out is not None:
        write_events(out, sim.events(n_events))
        click.echo(f"wrote {n_events} events to {out}", err=True)
    if bootstrap_servers is not None:
        try:
            if catalog_topic:
                produce_catalog(bootstrap_servers, catalog_topic, sim.catalog())
            sent = produce_events(
                bootstrap_servers, topic, sim.events(n_events), rate=rate, realtime=rate > 0
            )
        except StreamrecError as exc:
            raise _fail(exc) from None
        click.echo(f"produced {sent} events to {topic}", err=True)


@cli.command()
@click.option("--bootstrap-servers", help="HOST:PORT [env STREAMREC_BOOTSTRAP_SERVERS]")
@click.option("--partitions", default=4, show_default=True, type=click.IntRange(1))
@click.option("--replication", default=1, show_default=True, type=click.IntRange(1))
def topics(bootstrap_servers: str | None, partitions: int, replication: int) -> None:
    """Create the events, catalog, recommendations and dead-letter topics (and the signals
    topic when STREAMREC_SIGNALS_TOPIC is set)."""
    from streamrec.io.clients import ensure_topics
    from streamrec.ops.settings import load_settings

    try:
        settings = load_settings(bootstrap_servers=bootstrap_servers)
        created = ensure_topics(settings, partitions, replication)
    except StreamrecError as exc:
        raise _fail(exc) from None
    click.echo(json.dumps({"created": created}))


@cli.command()
@click.option("--workdir", default=".demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--port", default=0, type=int, help="broker port (0 = a free one)")
@click.option("--metrics-port", default=9108, show_default=True, type=int)
@click.option("--rate", default=20.0, show_default=True, help="simulated events per second")
@click.option(
    "--duration",
    default=0.0,
    help="stop after this many seconds of traffic, counted from when the simulated events start "
    "(after training or loading the model and starting the broker); 0 = run until Ctrl-C",
)
@click.option("--epochs", default=None, type=int, help="training epochs (default: trainer's)")
@click.option("--show", default=8, show_default=True, help="recommendations to print")
def demo(
    workdir: Path,
    port: int,
    metrics_port: int,
    rate: float,
    duration: float,
    epochs: int | None,
    show: int,
) -> None:
    """Broker + simulated traffic + trained model + worker, printing recommendations."""
    from streamrec.demo import DemoOptions, run_demo

    setup_logging("WARNING")
    stop = threading.Event()
    install_stop_handlers(stop)
    try:
        run_demo(DemoOptions(workdir, port, metrics_port, rate, epochs, show, duration), stop)
    except StreamrecError as exc:
        raise _fail(exc) from None


def main() -> None:
    """Entry point of the ``streamrec`` console script."""
    cli(prog_name="streamrec")


if __name__ == "__main__":
    main()
