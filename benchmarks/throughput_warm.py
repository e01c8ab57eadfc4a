"""Warm state for ``throughput.py``: a database and an input topic as a running worker leaves them.

The fused ranking's cost per event grows with its stream state: every event pairs with its
user's last ``covisit_window`` events, and the vectors of the new items among them are
rewritten in the index. A fresh worker on fresh users is therefore faster than one in steady
state, and a drain that starts cold speeds a measurement up that the next phase cannot keep.
So the measured events come after a warm-up the worker is *restarted* over:

* the warm-up events are produced to the events topic first (before the drain's backlog) and
  written to the database as applied (their partition and offset as read back), with the
  users' states and the partitions' next offsets, in the worker's own ``BatchWrite`` form:
  what the worker would have committed had it processed them;
* the worker starts, claims the partitions (it reads the stored offsets: it never consumes the
  warm-up records) and restores trending and co-visitation from the applied events, as after
  any restart (``stream_state_restore_events`` per partition);
* users of the history phases get their first ``h - 1`` events the same way; only the last
  ``covisit_window`` of them are applied events (all the co-visitation window needs), the
  earlier ones are only in the users' states (their history).

In process (``throughput_inprocess.py``) the same events are committed to the store and fed to
``Ranker.restore`` directly.
Not a script: the throughput scripts import it (this folder is on ``sys.path`` then).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import PARTITIONS, say
from throughput_worker import event_id_of, read_records
from throughput_workload import Catalog, Traffic

from streamrec.core.events import Event
from streamrec.core.history import UserState, fold_events
from streamrec.io.traffic import produce_events
from streamrec.ops.settings import Settings
from streamrec.ranking.ranker import Ranker
from streamrec.state.batch import AppliedEvent, BatchWrite
from streamrec.state.store import Store

CHUNK = 5000
RESTORE_CHUNK = 2000  # events per Ranker.restore call, as the worker's restore


@dataclass
class Warmup:
    """Events to apply (in order), every primed user's state, and the history groups."""

    applied: list[Event] = field(default_factory=list)
    states: dict[str, UserState] = field(default_factory=dict)
    groups: dict[int, tuple[Traffic, int, int]] = field(default_factory=dict)


def plan_warmup(
    args: Any, settings: Settings, catalog: Catalog, traffic: Traffic, history: Sequence[int]
) -> Warmup:
    """``args.warmup_events`` of ``traffic``, and users primed for each history length."""
    warm = Warmup()
    events = traffic.events(args.warmup_events)
    warm.applied += events
    warm.states.update(fold_events(events, settings.history_max_len))
    burst, paced = args.history_users, args.history_users
    for h in history:
        group = Traffic(
            catalog,
            users=burst + paced,
            zipf_s=args.zipf_s,
            purchase=0.0,  # one event per step: exactly h - 1 events per user
            seed=100 + h,
            prefix=f"h{h}-",
        )
        events = group.events((burst + paced) * (h - 1), users=range(burst + paced))
        warm.states.update(fold_events(events, settings.history_max_len))
        recent = (h - 1 - settings.covisit_window) * (burst + paced)
        warm.applied += events[max(0, recent) :]
        warm.groups[h] = (group, burst, paced)
    return warm


def write_warm_topic_and_db(
    settings: Settings, warm: Warmup
) -> tuple[dict[str, float], list[AppliedEvent]]:
    """Produce the warm-up events, read their positions back, commit them as applied."""
    bootstrap = settings.bootstrap_servers
    start = time.perf_counter()
    say(f"warm-up: {len(warm.applied):,} events to the topic, then to the database as applied ...")
    produce_events(bootstrap, settings.events_topic, warm.applied)
    records, _ = read_records(bootstrap, settings.events_topic, len(warm.applied), 300.0)
    by_id = {e.event_id: e for e in warm.applied}
    applied = [AppliedEvent(by_id[event_id_of(r)], r.partition, r.offset) for r in records]
    commit_warm(settings, settings.db_url, applied, warm.states, claim=True)
    seconds = time.perf_counter() - start
    return {"warm_events": len(applied), "warm_users": len(warm.states), "warm_s": seconds}, applied


def commit_warm(
    settings: Settings,
    db_url: str,
    applied: Sequence[AppliedEvent],
    states: dict[str, UserState],
    claim: bool,
    generations: dict[int, int] | None = None,
) -> None:
    """Commit applied events, users and next offsets in chunks, as the worker would have.

    ``claim``: claim the partitions first (then the worker's claim is the next generation);
    else ``generations`` are the caller's.
    """
    nxt: dict[int, int] = {}
    for a in applied:
        nxt[a.partition] = max(nxt.get(a.partition, 0), a.offset + 1)
    users = list(states.items())
    with Store(db_url, settings.group_id) as store:
        store.migrate()
        if claim:
            claimed = store.claim_partitions(settings.events_topic, range(PARTITIONS))
            generations = {p: g for p, (g, _) in claimed.items()}
        assert generations is not None
        rounds = max(1, -(-max(len(applied), len(users)) // CHUNK))
        for i in range(rounds):
            last = i == rounds - 1
            store.commit_batch(
                BatchWrite(
                    topic=settings.events_topic,
                    generations=generations if last else {},
                    next_offsets=nxt if last else {},
                    users=dict(users[i * CHUNK : (i + 1) * CHUNK]),
                    applied=list(applied[i * CHUNK : (i + 1) * CHUNK]),
                )
            )


def restore_ranker(ranker: Ranker, applied: Sequence[AppliedEvent]) -> None:
    """``Ranker.restore`` per partition in offset order, in the worker's chunks."""
    by_partition: dict[int, list[tuple[int, Event]]] = {}
    for a in applied:
        by_partition.setdefault(a.partition, []).append((a.offset, a.event))
    for p, pairs in sorted(by_partition.items()):
        pairs.sort(key=lambda t: t[0])
        for start in range(0, len(pairs), RESTORE_CHUNK):
            ranker.restore(p, pairs[start : start + RESTORE_CHUNK])
