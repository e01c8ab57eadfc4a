"""One embedded broker, one catalog, one live worker: the runs of ``throughput.py``.

In order: the catalog is produced to the catalog topic; the warm-up (``throughput_warm.py``)
to the events topic and the worker's database, as if a worker had processed it; the drain's
backlog to the events topic. The worker starts: it applies the catalog from the topic, claims
its partitions, restores its stream state from the warm-up and drains the backlog. Then paced
events at a fraction of the drain rate; for each history length a burst and a paced phase
from users primed to that length; the worker stops; the output topic is read back (exactly
once); then, with the worker stopped, the passthrough ceiling, each stage alone and the
index's recall. ``full=False`` (the catalog-size curve) stops after the drain and paced
phases.

Not a script: ``throughput.py`` imports it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import broker_settings, pct, say
from throughput_ceiling import passthrough
from throughput_recall import recall
from throughput_stages import stage_benchmarks
from throughput_warm import plan_warmup, write_warm_topic_and_db
from throughput_worker import (
    LiveWorker,
    Phase,
    burst_phase,
    event_id_of,
    input_timestamps,
    paced_phase,
    read_records,
    set_latencies,
    verify_output,
)
from throughput_workload import Traffic, make_catalog

from streamrec.core.events import Event
from streamrec.io.traffic import produce_catalog, produce_events
from streamrec.ops.settings import Settings
from streamrec.worker.serving import load_serving_model

# seconds the worker may take to apply the catalog before it consumes (``catalog_catchup_s``;
# the default 30 s is short of 100,000 vector records on a slow machine, and events answered
# meanwhile share each loop iteration with a slice of the catalog)
CATALOG_CATCHUP_S = 900.0


def phase_summary(phase: Phase) -> dict[str, Any]:
    """A phase as plain values (the report's and the JSON's)."""
    batches, mean = phase.batch_counts()
    records = phase.metrics.get("records", 0.0)
    stages = {
        k.removeprefix("stage:"): 1e6 * v / records
        for k, v in phase.metrics.items()
        if k.startswith("stage:") and records
    }
    lat = phase.latencies
    return {
        "name": phase.name,
        "events": phase.events,
        "received": phase.received,
        "rate": phase.steady_rate,
        "rate_target": phase.rate_target,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat) if lat else float("nan"),
        "batches": batches,
        "mean_batch": mean,
        "stage_us": stages,
        "error": phase.error,
    }


def broker_session(
    args: Any,
    model_dir: Path,
    n_items: int,
    tmp: Path,
    full: bool,
    output_client: str = "kafka-python",
) -> dict[str, Any]:
    """Everything measured through one broker (module docstring); plain values."""
    tmp.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{tmp / 'worker.db'}"
    # the drain measures a worker on its whole catalog: it catches up before consuming
    with broker_settings(
        tmp,
        model_dir,
        db_url,
        log_level="WARNING",
        catalog_catchup_s=CATALOG_CATCHUP_S,
        output_client=output_client,
    ) as (broker, settings):
        model = load_serving_model(settings)
        catalog = make_catalog(model.files.item_ids, model.files.item_vectors, n_items, seed=0)
        out: dict[str, Any] = {
            "items": len(catalog),
            "trained_items": catalog.trained,
            "users": args.users,
            "zipf_s": args.zipf_s,
        }
        say(f"producing the catalog: {len(catalog):,} items with vectors ...")
        start = time.perf_counter()
        produce_catalog(broker.bootstrap, settings.items_topic, catalog.ops())
        out["catalog_produce_s"] = time.perf_counter() - start
        traffic = Traffic(catalog, users=args.users, zipf_s=args.zipf_s, seed=1)
        warm = plan_warmup(args, settings, catalog, traffic, args.history if full else [])
        warm_stats, applied = write_warm_topic_and_db(settings, warm)
        out.update(warm_stats)
        n_events = args.events if full else args.curve_events
        drain_events = traffic.events(n_events)
        out["distinct_items"] = traffic.distinct_items(drain_events)
        trained = set(catalog.ids[: catalog.trained])
        out["trained_share"] = sum(e.item_id in trained for e in drain_events) / len(drain_events)
        say(f"producing the drain's backlog: {len(drain_events):,} events ...")
        start = time.perf_counter()
        produce_events(broker.bootstrap, settings.events_topic, drain_events)
        out["produce_s"] = time.perf_counter() - start
        groups = warm.groups

        live = LiveWorker(settings, model, len(catalog))
        phases: list[Phase] = []
        produced: list[Event] = list(drain_events)
        say(f"drain: worker started on {len(drain_events):,} events and {len(catalog):,} items ...")
        live.start()
        drain = Phase("drain", len(drain_events), t_begin=live.t_start)
        timeout = args.timeout_s + len(catalog) / 500 + len(drain_events) / 20
        phases.append(live.collect(drain, {e.event_id for e in drain_events}, timeout))
        out.update(catalog_s=live.catalog_s, claimed_s=live.claimed_s)
        out["first_output_s"] = (
            (drain.outputs[0].recv - live.t_start) if drain.outputs else float("nan")
        )
        say(f"drain: {drain.received:,} answered, {drain.steady_rate:,.0f} events/s steady")
        rate = drain.steady_rate
        seconds = args.paced_seconds if full else args.curve_paced_seconds
        if rate == rate and seconds > 0:
            fraction = args.paced_fraction
            events = traffic.events(max(1, int(fraction * rate * seconds)))
            produced += events
            name = f"paced {100 * fraction:.0f} %"
            phases.append(paced_phase(live, name, events, fraction * rate, args.timeout_s))
        for h, (group, burst_users, paced_users) in groups.items():
            events = group.events(burst_users, users=range(burst_users))
            produced += events
            burst = burst_phase(live, f"history {h}: burst", events, args.timeout_s)
            phases.append(burst)
            r = burst.steady_rate
            if r == r:
                n = min(
                    paced_users, max(1, int(args.paced_fraction * r * args.history_paced_seconds))
                )
                events = group.events(n, users=range(burst_users, burst_users + n))
                produced += events
                phases.append(
                    paced_phase(
                        live, f"history {h}: paced", events, args.paced_fraction * r, args.timeout_s
                    )
                )
        out["stop_problem"] = live.stop()
        out["late_outputs"] = len(live.late)
        say("reading the output topic back (exactly once) ...")
        out["exactly_once"] = verify_output(settings, [e.event_id for e in produced], 120.0)
        n_inputs = int(out["warm_events"]) + len(produced)
        inputs, _ = read_records(broker.bootstrap, settings.events_topic, n_inputs, 120.0)
        set_latencies(phases, input_timestamps(inputs))
        out["phases"] = [phase_summary(p) for p in phases]
        if not full:
            return out
        drain_ids = {e.event_id for e in drain_events}
        records = [r for r in inputs if event_id_of(r) in drain_ids]
        after_warm: dict[int, int] = {}
        for a in applied:
            after_warm[a.partition] = max(after_warm.get(a.partition, 0), a.offset + 1)
        _, poll_s = read_records(
            broker.bootstrap, settings.events_topic, len(records), 60.0, start=after_warm
        )
        out["ceiling"] = passthrough(settings, len(records), after_warm)
        stages = stage_benchmarks(
            settings, model, records, poll_s, catalog.ops, (applied, warm.states), tmp
        )
        out["stages"] = {
            "events": stages.events,
            "seconds": stages.seconds,
            "what": stages.what,
            "detail": stages.detail,
            "batches": stages.batches,
            "pipeline_in_process_s": stages.pipeline_in_process_s,
        }
        if stages.queries is not None:
            queries = stages.queries[: args.recall_queries]
            out["recall"] = recall(
                settings, model.index, catalog.ids, queries, sweep=args.recall_sweep
            )
        out["settings"] = _settings_summary(settings)
        out["model"] = {
            "version": model.files.meta.version,
            "dim": model.files.meta.dim,
            "max_len": model.files.meta.max_len,
            "items": model.files.meta.num_items,
        }
        return out


def _settings_summary(settings: Settings) -> dict[str, Any]:
    keys: Sequence[str] = (
        "ranking",
        "batch_max_events",
        "poll_timeout_ms",
        "top_k",
        "candidate_pool",
        "hnsw_m",
        "hnsw_ef_construction",
        "hnsw_ef_search",
        "encoder_threads",
        "history_max_len",
        "explore_from",
        "catalog_batch_max_records",
        "output_client",
    )
    return {k: getattr(settings, k) for k in keys if hasattr(settings, k)}
