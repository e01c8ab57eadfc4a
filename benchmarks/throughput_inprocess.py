"""The event path in one process, no broker, for ``throughput.py``'s catalog-size curve.

Index + ranking + store, as the worker wires them: an ``ItemIndex`` over the catalog's
vectors (built in one call; the worker applies the catalog topic one record at a time), the
fused ``Ranker`` that has seen every catalog record (``observe_catalog``, as the catalog
follower calls it), ``Pipeline.process`` + ``Store.commit_batch`` + ``delete_outbox`` on a fresh
SQLite file. No decode of Kafka records beyond the codec, no publish.

* warm-up: the events are committed to the store as applied and fed to ``Ranker.restore``
  (``throughput_warm.py``: the state a worker restarts from);
* events/s: batches of ``batch_max_events`` back to back;
* latency: the events arrive at 50 % of that rate (real time); the loop takes what has arrived
  (at most a batch), processes and commits it; an event's latency is the batch's end minus its
  arrival (the worker's loop without Kafka).

This is how the 1M-item point is measured: a million catalog records through the embedded
(memory-only) broker, applied one at a time, is beyond the benchmark's time budget.
Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from harness import PARTITIONS, pct, say
from throughput_profile import profiled
from throughput_stages import chunks
from throughput_warm import commit_warm, restore_ranker
from throughput_workload import Catalog, Traffic, make_catalog

from streamrec.core.events import Event
from streamrec.core.history import fold_events
from streamrec.io.codec import encode_event
from streamrec.ops.settings import Settings
from streamrec.ranking.encoder import Encoder
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.modelfiles import ModelFiles
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.batch import AppliedEvent
from streamrec.state.store import Store
from streamrec.worker.step import Pipeline, Record


def to_records(
    settings: Settings, events: Sequence[Event], offsets: dict[int, int]
) -> list[Record]:
    """Events as input records (partition by user, as the producer's key hash would)."""
    out = []
    now_ms = int(time.time() * 1000)
    for e in events:
        p = zlib.crc32(e.user_id.encode()) % PARTITIONS
        off = offsets.get(p, 0)
        offsets[p] = off + 1
        out.append(
            Record(settings.events_topic, p, off, e.user_id.encode(), encode_event(e), now_ms)
        )
    return out


def catalog_ranker(
    settings: Settings, files: ModelFiles, encoder: Encoder, n_items: int
) -> tuple[Catalog, ItemIndex, Ranker, float, float]:
    """The benchmark catalog of ``n_items``, its index (built in one call) and a fused ranker
    that has seen every catalog record; with the seconds of the build and of the records."""
    catalog = make_catalog(files.item_ids, files.item_vectors, n_items, seed=0)
    start = time.perf_counter()
    index = ItemIndex(
        catalog.ids,
        catalog.vectors,
        m=settings.hnsw_m,
        ef_construction=settings.hnsw_ef_construction,
        ef_search=settings.hnsw_ef_search,
    )
    index.centroid = np.asarray(files.item_vectors, dtype=np.float32).mean(axis=0)
    build_s = time.perf_counter() - start
    ranker = Ranker(encoder, index, RankingConfig.from_settings(settings), trained=files.item_ids)
    start = time.perf_counter()
    for op in catalog.ops():
        ranker.observe_catalog(op)
    return catalog, index, ranker, build_s, time.perf_counter() - start


def inprocess_point(
    settings: Settings,
    files: ModelFiles,
    encoder: Encoder,
    n_items: int,
    args: Any,
    tmp: Path,
    profile: bool = False,
) -> dict[str, Any]:
    """One catalog size: build, warm up, back-to-back events/s, paced latency (and, with
    ``profile``, where a drain's time goes: ``throughput_profile.py``)."""
    say(f"in-process {n_items:,} items: catalog and index ...")
    catalog, index, ranker, build_s, observe_s = catalog_ranker(settings, files, encoder, n_items)
    pipeline = Pipeline(
        settings,
        encoder,
        index,
        files.meta.version,
        max_future_ms=settings.max_event_future_ms,
        max_age_ms=settings.max_event_age_ms or None,
        ranker=ranker,
    )
    traffic = Traffic(catalog, users=args.users, zipf_s=args.zipf_s, seed=1)
    offsets: dict[int, int] = {}
    db = tmp / f"inprocess-{n_items}.db"
    db.unlink(missing_ok=True)
    out: dict[str, Any] = {
        "items": len(catalog),
        "build_s": build_s,
        "observe_catalog_s": observe_s,
    }
    with Store(f"sqlite:///{db}", settings.group_id) as store:
        store.migrate()
        claimed = store.claim_partitions(settings.events_topic, range(PARTITIONS))
        gens = {p: g for p, (g, _) in claimed.items()}

        def run(batch: Sequence[Record]) -> None:
            write, _ = pipeline.process(batch, store, gens)
            stored = store.commit_batch(write)
            store.delete_outbox([m.id for m in stored if m.id])

        warm_events = traffic.events(args.warmup_events)
        warm = to_records(settings, warm_events, offsets)
        applied = [
            AppliedEvent(e, r.partition, r.offset) for e, r in zip(warm_events, warm, strict=True)
        ]
        states = fold_events(warm_events, settings.history_max_len)
        commit_warm(settings, f"sqlite:///{db}", applied, states, claim=False, generations=gens)
        start = time.perf_counter()
        restore_ranker(ranker, applied)
        out["restore_s"] = time.perf_counter() - start
        events = traffic.events(args.curve_events)
        drain = to_records(settings, events, offsets)
        say(f"in-process {n_items:,} items: {len(drain):,} events back to back ...")
        start = time.perf_counter()
        for batch in chunks(drain, settings.batch_max_events):
            run(batch)
        rate = len(drain) / (time.perf_counter() - start)
        out.update(events=len(drain), rate=rate, distinct_items=traffic.distinct_items(events))
        if profile:
            more = to_records(settings, traffic.events(args.curve_events), offsets)
            say(f"in-process {n_items:,} items: {len(more):,} more events under cProfile ...")

            def drain_more() -> None:
                for batch in chunks(more, settings.batch_max_events):
                    run(batch)

            out["profile"] = {"events": len(more), **profiled(drain_more)}
        paced_rate = args.paced_fraction * rate
        n_paced = max(1, int(paced_rate * args.curve_paced_seconds))
        paced = to_records(settings, traffic.events(n_paced), offsets)
        say(f"in-process {n_items:,} items: {n_paced:,} events at {paced_rate:,.0f}/s ...")
        lat = paced_loop(paced, paced_rate, settings.batch_max_events, run)
        out.update(paced_rate=paced_rate, paced_events=n_paced, p50=pct(lat, 50), p99=pct(lat, 99))
    return out


def paced_loop(records: Sequence[Record], rate: float, batch_max: int, run: Any) -> list[float]:
    """Arrivals at ``rate``; each loop takes what has arrived (at most ``batch_max``)."""
    t0 = time.perf_counter()
    arrival = [t0 + i / rate for i in range(len(records))]
    lat: list[float] = []
    i = 0
    while i < len(records):
        now = time.perf_counter()
        if arrival[i] > now:
            time.sleep(arrival[i] - now)
            continue
        j = i
        while j < len(records) and j - i < batch_max and arrival[j] <= now:
            j += 1
        run(records[i:j])
        end = time.perf_counter()
        lat.extend(end - arrival[k] for k in range(i, j))
        i = j
    return lat
