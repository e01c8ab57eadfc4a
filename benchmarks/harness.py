"""What the benchmark scripts share: paths, the broker, models, timing, machine and report lines.

The scripts run as ``python benchmarks/X.py``, which puts this folder on ``sys.path``: they
import this module as ``harness`` (and ``assemble`` likewise). Heavy imports (kafka, streamrec,
torch) happen inside the functions that need them, so that importing this module loads none of
them (``quality.py``, ``replay.py`` and ``tune.py`` import theirs lazily too).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from assemble import assemble

if TYPE_CHECKING:
    from kafka import KafkaConsumer

    from streamrec.io.broker import EmbeddedBroker
    from streamrec.ops.settings import Settings
    from streamrec.training.train import TrainConfig
    from streamrec.worker import Worker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# MovieLens-100k in the shared data folder beside the repository; ML100K_ARG is the same file
# relative to the repository root (where make runs the scripts), the default --data shows.
ML100K = ROOT.parent / "shared" / "datasets" / "ml-100k" / "u.data"
ML100K_ARG = os.path.relpath(ML100K, ROOT)
PARTITIONS = 4


# -- progress and timing -------------------------------------------------------------------------
def say(msg: str) -> None:
    """Progress on stderr, timestamped."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Timer:
    """Accumulates seconds and counts per name."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.calls[name] = self.calls.get(name, 0) + 1


def pct(values: Sequence[float], q: float) -> float:
    """Percentile, NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def sample_sums(metric: Any, suffix: str, label: str | None = None) -> dict[str, float]:
    """Sum of a Prometheus metric's samples ending in ``suffix``, keyed by one label's value."""
    out: dict[str, float] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith(suffix):
                key = s.labels.get(label, "") if label else ""
                out[key] = out.get(key, 0.0) + s.value
    return out


def histogram_quantile(hist: Any, q: float) -> tuple[float, float]:
    """Bucket bounds (lower, upper) in which quantile ``q`` of a Prometheus histogram falls."""
    buckets = []
    for family in hist.collect():
        for s in family.samples:
            if s.name.endswith("_bucket"):
                buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    lower = 0.0
    for le, cum in buckets:
        if total and cum >= q * total:
            return lower, le
        lower = le
    return float("nan"), float("nan")


# -- the machine and the run ---------------------------------------------------------------------
def cpu_model(default: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo, or ``default``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def machine() -> dict[str, str]:
    """nproc, CPU model, Python, load average and the versions that matter."""
    versions = []
    for mod in ("onnxruntime", "hnswlib", "kafka", "sqlalchemy", "numpy"):
        with suppress(ImportError, AttributeError):
            versions.append(f"{mod} {__import__(mod).__version__}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "load": load,
        "versions": ", ".join(versions),
    }


def utc_now(fmt: str) -> str:
    """The current UTC time in ``strftime`` format ``fmt``."""
    return dt.datetime.now(dt.UTC).strftime(fmt)


def run_lines(info: dict[str, str], program: str) -> list[str]:
    """The command, date, machine and libraries lines that open a report section."""
    return [
        f"- command: `{' '.join(shlex.quote(a) for a in [program, *sys.argv])}`",
        f"- date: {utc_now('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"load average at start {info['load']} (the machine is shared)",
        f"- libraries: {info['versions']}",
    ]


# -- models --------------------------------------------------------------------------------------
def check_model_dir(model: Path) -> Path:
    """``model`` when it holds a model; exits naming ``--model`` otherwise."""
    from streamrec.ranking.modelfiles import META_FILE

    if not (model / META_FILE).is_file():
        raise SystemExit(f"--model {model}: no {META_FILE} there")
    return model


def train_simulated(
    tmp: Path, n_events: int, config: TrainConfig, note: str
) -> tuple[Path, dict[str, Any], float]:
    """Train on ``n_events`` simulated events (seed 0) into ``tmp/model``.

    Says ``note`` before training; returns the model directory, the training summary and the
    seconds it took.
    """
    from streamrec.io.simulate import SimConfig, Simulator
    from streamrec.io.traffic import write_events
    from streamrec.training.train import train_file

    data = tmp / "train.jsonl"
    write_events(data, Simulator(SimConfig(seed=0)).events(n_events))
    say(note)
    start = time.monotonic()
    summary = train_file(data, tmp / "model", config)
    return tmp / "model", summary, time.monotonic() - start


def model_or_small(model: str | None, dim: int, tmp: Path) -> Path:
    """``model`` (checked) when given, else a small model trained here: d=``dim``, max_len 20,
    2 epochs on 3,000 simulated events (what the index and memory benchmarks need)."""
    if model:
        return check_model_dir(Path(model))
    from streamrec.training.train import TrainConfig

    config = TrainConfig(epochs=2, max_len=20, dim=dim, progress=False, threads=1)
    return train_simulated(tmp, 3000, config, f"training a d={dim} model")[0]


def train_warmup_model(
    data: str, model_dir: Path, fraction: float, epochs: int, events: list[Any] | None = None
) -> float | None:
    """Train the encoder on the first ``fraction`` of the log by time, unless ``model_dir``
    already holds a model; returns the seconds it took, or None when nothing was trained.

    ``events`` is the log when the caller has loaded it already (else ``data`` is read).
    """
    from streamrec.evaluation.cli import _train_on_warmup
    from streamrec.evaluation.replay import load_log
    from streamrec.ranking.modelfiles import META_FILE

    if (model_dir / META_FILE).is_file():
        return None
    if events is None:
        events = load_log(data)
    started = time.perf_counter()
    _train_on_warmup(events[: int(len(events) * fraction)], model_dir, epochs, 50)
    return time.perf_counter() - started


# -- the broker ----------------------------------------------------------------------------------
@contextmanager
def broker_settings(
    tmp: Path, model_dir: Path, db_url: str, **overrides: Any
) -> Iterator[tuple[EmbeddedBroker, Settings]]:
    """The embedded broker (log in ``tmp``), the worker's settings on it and its topics
    (``PARTITIONS`` partitions each); ``overrides`` go to ``load_settings`` (None: default).
    """
    from streamrec.io.broker import EmbeddedBroker
    from streamrec.io.clients import ensure_topics
    from streamrec.ops.settings import load_settings

    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        say(f"broker {broker.bootstrap}")
        settings = load_settings(
            bootstrap_servers=broker.bootstrap,
            model_dir=model_dir,
            db_url=db_url,
            metrics_port=0,
            **overrides,
        )
        ensure_topics(settings, partitions=PARTITIONS)
        yield broker, settings


def assigned_consumer(bootstrap: str, topic: str, timeout_s: float = 15.0) -> KafkaConsumer:
    """A group-less consumer with every partition of ``topic`` assigned, from the beginning."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    # A short fetch wait: the embedded broker holds an empty fetch for the whole
    # fetch_max_wait_ms (default 500 ms) instead of answering when data arrives, which would
    # add up to that much to every latency measured here.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    deadline = time.monotonic() + timeout_s
    parts = consumer.partitions_for_topic(topic)
    while not parts and time.monotonic() < deadline:
        time.sleep(0.1)
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        consumer.close()
        raise RuntimeError(f"topic {topic} has no partitions")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer


def wait_claimed(worker: Worker, timeout_s: float) -> bool:
    """Wait until ``worker`` has claimed its partitions (at most ``timeout_s``); whether it did."""
    deadline = time.monotonic() + timeout_s
    while not worker.generations and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(worker.generations)


# -- reports -------------------------------------------------------------------------------------
def fmt(x: float, digits: int = 0) -> str:
    """A number, or an em dash for NaN."""
    return "—" if x != x else f"{x:,.{digits}f}"


def ms(x: float) -> str:
    """Seconds as milliseconds."""
    return fmt(1000 * x, 1)


def md_row(cells: Sequence[str]) -> str:
    """One row of a Markdown table."""
    return "| " + " | ".join(cells) + " |"


def table_head(columns: Sequence[str], align: str = "") -> list[str]:
    """A Markdown table's header and separator; ``r`` at a column's place in ``align``
    right-aligns it (every other column is left as is)."""
    seps = ["---:" if align[i : i + 1] == "r" else "---" for i in range(len(columns))]
    return [md_row(columns), "|" + "|".join(seps) + "|"]


def publish(path: Path, text: str) -> Path:
    """Write one section file, then re-assemble BENCHMARKS.md; returns BENCHMARKS.md's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return assemble()


# -- command lines -------------------------------------------------------------------------------
# The options replay.py and tune.py share (click).
data_option = click.option("--data", default=ML100K_ARG, show_default=True)
epochs_option = click.option("--epochs", default=40, show_default=True)
