"""Streaming (prequential) replay evaluation through the production pipeline.

Protocol (``replay``):

* The log is ordered by timestamp, ties by file order. The first ``warmup_fraction`` of the
  events trains the model (never the rest: no leakage) and warms the state: user states are the
  fold of the warm-up events (``history.fold_events``, the specification of the store) and the
  ranker observes them (trending, co-visitation). Each warm-up user's current list is
  computed once at the cut.
* The rest is replayed in time order through ``Pipeline.process`` -- the worker's code path:
  decode, dedupe, fold, ranker (candidates, fusion, filters, exploration) -- in batches in
  which no user appears twice (so every list a user is scored on was produced before that
  user's event; other users' earlier events of the same batch may already count, as in
  production).
* Test-then-train: before an event is applied, the list that was current for its user is scored
  against the event's item (HR@10, NDCG@10, MRR within the list). A user with no list yet (new
  user) is scored on what the ranker shows an empty state at that moment.
* Items that are in the log but not in the model are announced to the index the first time they
  appear, as the catalog topic would (centroid vector, available), just before their event.

Segments: the user's history length before the event (0, 1-4, 5-19, 20+) and whether the target
item was in the training data (``seen``) or not (``new``). Also: catalog coverage (distinct items
in all lists produced during the replay / items in model or log), popularity bias (share of
recommended slots taken by the top 10% most frequent training items), exploration rate
(share of explored slots) and repeat share (share of the slots published during the replay
that show an item an earlier published list of the same user already showed).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from streamrec.core.events import Event
from streamrec.core.history import EMPTY, fold_events
from streamrec.io.codec import decode_event, encode_event
from streamrec.ops.settings import Settings, load_settings
from streamrec.ranking.encoder import Encoder
from streamrec.ranking.explore import ShownItem
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.modelfiles import ModelFiles
from streamrec.ranking.rank import exclusions
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.memory import MemoryStateReader
from streamrec.worker.step import Pipeline, Record

HISTORY_SEGMENTS = ("history=0", "history=1-4", "history=5-19", "history=20+")
ITEM_SEGMENTS = ("item=seen", "item=new")


def load_log(path: str | Path) -> list[Event]:
    """Read a log (MovieLens ``user item rating ts`` lines or our JSON-lines events), by time.

    MovieLens timestamps are seconds (converted to ms) and every line is a ``click`` (MovieLens
    has no purchases). Ties in time keep file order.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    events: list[Event] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if text.lstrip().startswith("{"):
            events.append(decode_event(text.encode("utf-8")))
            continue
        fields = text.split()
        ts_ms = int(float(fields[3]) * 1000) if len(fields) >= 4 else number
        events.append(Event(f"l{number}", fields[0], fields[1], "click", ts_ms))
    return [e for _, e in sorted(enumerate(events), key=lambda p: (p[1].ts, p[0]))]


def split_by_time(events: Sequence[Event], fraction: float) -> tuple[list[Event], list[Event]]:
    """The first ``fraction`` of the (time-ordered) events, and the rest."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"warmup fraction must be in (0, 1), got {fraction}")
    cut = int(len(events) * fraction)
    return list(events[:cut]), list(events[cut:])


@dataclass
class SegmentStats:
    """Sums of the per-event metrics of one segment."""

    n: int = 0
    hits: float = 0.0
    ndcg: float = 0.0
    rr: float = 0.0

    def add(self, items: Sequence[str], target: str, k: int) -> None:
        """Score one list against the event's item."""
        self.n += 1
        top = list(items[:k])
        if target in top:
            rank = top.index(target)
            self.hits += 1.0
            self.ndcg += 1.0 / math.log2(rank + 2)
            self.rr += 1.0 / (rank + 1)

    def summary(self) -> dict[str, float]:
        """Means (0 for an empty segment) and the count."""
        n = max(self.n, 1)
        return {
            "n": self.n,
            "hr@10": self.hits / n,
            "ndcg@10": self.ndcg / n,
            "mrr": self.rr / n,
        }


@dataclass
class ListStats:
    """What was recommended, for coverage, popularity bias and exploration rate."""

    items: Counter[str] = field(default_factory=Counter)
    slots: int = 0
    explored: int = 0
    lists: int = 0
    repeats: int = 0  # slots of an item an earlier list of the same user already held
    _seen: dict[str, set[str]] = field(default_factory=dict)

    def add(self, shown: Sequence[ShownItem], user: str | None = None) -> None:
        """Count one produced list (of ``user``'s, for repeats)."""
        self.lists += 1
        seen = self._seen.setdefault(user, set()) if user is not None else None
        for s in shown:
            self.items[s.item_id] += 1
            self.slots += 1
            self.explored += int(s.explored)
            if seen is not None:
                self.repeats += s.item_id in seen
                seen.add(s.item_id)


def history_segment(n_events: int) -> str:
    """The history-length segment of a user with ``n_events`` before the event."""
    if n_events == 0:
        return HISTORY_SEGMENTS[0]
    if n_events < 5:
        return HISTORY_SEGMENTS[1]
    if n_events < 20:
        return HISTORY_SEGMENTS[2]
    return HISTORY_SEGMENTS[3]


def user_disjoint_batches(events: Iterable[Event], size: int) -> Iterator[list[Event]]:
    """Consecutive batches of at most ``size`` events in which no user appears twice."""
    batch: list[Event] = []
    users: set[str] = set()
    for event in events:
        if len(batch) >= size or event.user_id in users:
            yield batch
            batch, users = [], set()
        batch.append(event)
        users.add(event.user_id)
    if batch:
        yield batch


@dataclass
class ReplayData:
    """A split log and what every configuration shares."""

    warmup: list[Event]
    test: list[Event]
    files: ModelFiles
    catalog: set[str]
    popular: set[str]

    @classmethod
    def build(cls, events: Sequence[Event], files: ModelFiles, fraction: float) -> ReplayData:
        """Split, and derive the catalog and the top-10% popular training items."""
        warmup, test = split_by_time(events, fraction)
        counts = Counter(e.item_id for e in warmup)
        top_n = max(1, math.ceil(0.1 * len(counts)))
        popular = {i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]}
        catalog = set(files.item_ids) | {e.item_id for e in events}
        return cls(warmup, test, files, catalog, popular)


def _fresh_index(files: ModelFiles) -> ItemIndex:
    return ItemIndex(files.item_ids, files.item_vectors)


def _warm_lists(
    pipeline: Pipeline, rec: Ranker, store: MemoryStateReader, k: int, exclude_history: bool
) -> dict[str, list[ShownItem]]:
    """Each warm-up user's list at the cut, by the ranker of the user's A/B arm (if any)."""
    groups: dict[str | None, list[str]] = {}
    for user in sorted(store.users):
        groups.setdefault(pipeline.arm_of(user), []).append(user)
    current: dict[str, list[ShownItem]] = {}
    for arm, users in groups.items():
        ranker = _ranker_of(pipeline, rec, arm)
        for start in range(0, len(users), 256):
            chunk = users[start : start + 256]
            states = [store.users[u] for u in chunk]
            excl = [exclusions(s, exclude_history) for s in states]
            lists = ranker.recommend_batch(states, excl, k, keys=chunk)
            current.update(zip(chunk, lists, strict=True))
    return current


def _ranker_of(pipeline: Pipeline, rec: Ranker, arm: str | None) -> Ranker:
    """The ranker of an A/B arm (``rec`` outside a test)."""
    return rec if arm is None else pipeline.arm_rankers.get(arm, rec)


class ReplayObserver(Protocol):
    """Sees every scored list (the per-arm report, ``streamrec.evaluation.arms``)."""

    def scored(self, event: Event, shown: Sequence[ShownItem], k: int) -> None:
        """``shown`` was the user's list when ``event`` came (test-then-train)."""
        ...

    def listed(self, user_id: str, shown: Sequence[ShownItem]) -> None:
        """A list produced during the replay (the lists coverage counts)."""
        ...


def replay_config(
    data: ReplayData,
    encoder: Encoder,
    config: RankingConfig,
    name: str = "replay",
    batch_size: int = 64,
    settings: Settings | None = None,
    progress: bool = True,
    impressions: bool = False,
    observer: ReplayObserver | None = None,
) -> dict[str, Any]:
    """Replay the test part of the log for one ranker configuration.

    With ``impressions``, every list published during the replay is taken as shown to its
    user: one ``impression`` event per item goes through the pipeline after its batch, so the
    user's later lists are demoted by the settings' ``impression_demote_*`` (an item of a
    list the user then rates gets its count reset, as a click would).

    With A/B arms in ``settings`` (``ab_arms``), each user's lists come from the ranker of
    the user's arm, as in the worker; ``observer`` sees every scored list (per-arm metrics).

    Returns:
        JSON-able: overall and per-segment metrics, coverage, popularity bias, exploration
        rate, counts and wall time.
    """
    started = time.perf_counter()
    settings = settings or load_settings(top_k=config.k)
    k = settings.top_k
    index = _fresh_index(data.files)
    rec = Ranker(encoder, index, config, trained=data.files.item_ids)
    store = MemoryStateReader()
    store.users = fold_events(data.warmup, settings.history_max_len)
    store.applied_ids = {e.event_id for e in data.warmup}
    for event in data.warmup:
        rec.observe(event)
    clock_s = [data.warmup[-1].ts / 1000.0 if data.warmup else 0.0]
    pipeline = Pipeline(
        settings, encoder, index, data.files.meta.version, lambda: clock_s[0], ranker=rec
    )
    current = _warm_lists(pipeline, rec, store, k, settings.exclude_history)
    segments = {s: SegmentStats() for s in ("overall", *HISTORY_SEGMENTS, *ITEM_SEGMENTS)}
    shown_stats = ListStats()
    offset = 0
    bar = tqdm(total=len(data.test), desc=name, unit="ev", disable=not progress, leave=False)
    for batch in user_disjoint_batches(data.test, batch_size):
        for event in batch:
            if event.item_id not in index:  # the catalog announces it before its first event
                index.upsert(event.item_id, None, available=True)
            shown = current.get(event.user_id)
            if shown is None:  # a new user sees what an empty state gets right now
                ranker = _ranker_of(pipeline, rec, pipeline.arm_of(event.user_id))
                shown = ranker.recommend_batch([EMPTY], [set()], k, keys=[event.event_id])[0]
                shown_stats.add(shown)
                if observer is not None:
                    observer.listed(event.user_id, shown)
            state = store.users.get(event.user_id, EMPTY)
            ids = [s.item_id for s in shown]
            seen = "item=new" if event.item_id not in rec.new_items.trained else "item=seen"
            for segment in ("overall", history_segment(state.n_events), seen):
                segments[segment].add(ids, event.item_id, k)
            if observer is not None:
                observer.scored(event, shown, k)
        records = [
            Record(settings.events_topic, 0, offset + i, e.user_id.encode(), encode_event(e), e.ts)
            for i, e in enumerate(batch)
        ]
        offset += len(batch)
        clock_s[0] = batch[-1].ts / 1000.0
        write, _stats = pipeline.process(records, store, {0: 0})
        store.users.update(write.users)
        store.applied_ids.update(a.event.event_id for a in write.applied)
        published = [m for m in write.messages if m.topic == settings.recs_topic]
        for message, (user, shown) in zip(published, pipeline.last_shown, strict=True):
            sent = [it["item_id"] for it in json.loads(message.value or b"{}")["items"]]
            if sent != [s.item_id for s in shown]:
                raise AssertionError("published list differs from the ranker's list")
            current[user] = shown
            shown_stats.add(shown, user)
            if observer is not None:
                observer.listed(user, shown)
        if impressions:
            offset = _show(pipeline, store, published, offset, clock_s[0])
        bar.update(len(batch))
    bar.close()
    return _summary(data, config, segments, shown_stats, rec, time.perf_counter() - started)


def _show(
    pipeline: Pipeline, store: MemoryStateReader, published: list[Any], offset: int, now_s: float
) -> int:
    """Fold one impression per item of each published list into its user's state."""
    topic = pipeline.settings.events_topic
    records = []
    for message in published:
        body = json.loads(message.value or b"{}")
        for slot, item in enumerate(body["items"]):
            event = Event(
                f"{body['rec_id']}/{slot}",
                body["user_id"],
                item["item_id"],
                "impression",
                int(now_s * 1000),
                body["rec_id"],
            )
            records.append(Record(topic, 0, offset, message.key, encode_event(event), event.ts))
            offset += 1
    if records:
        write, _ = pipeline.process(records, store, {0: 0})
        store.users.update(write.users)
        store.applied_ids.update(a.event.event_id for a in write.applied)
    return offset


def _summary(
    data: ReplayData,
    config: RankingConfig,
    segments: dict[str, SegmentStats],
    shown: ListStats,
    rec: Ranker,
    seconds: float,
) -> dict[str, Any]:
    slots = max(shown.slots, 1)
    new_items = {i for i in shown.items if rec.new_items.is_new(i)}
    return {
        "config": asdict(config),
        "overall": segments["overall"].summary(),
        "segments": {s: segments[s].summary() for s in (*HISTORY_SEGMENTS, *ITEM_SEGMENTS)},
        "coverage": len(shown.items) / max(len(data.catalog), 1),
        "distinct_items": len(shown.items),
        "catalog_size": len(data.catalog),
        "popularity_bias": sum(c for i, c in shown.items.items() if i in data.popular) / slots,
        "exploration_rate": shown.explored / slots,
        "repeat_share": shown.repeats / slots,
        "lists": shown.lists,
        "new_items_recommended": len(new_items),
        "new_item_vectors_written": rec.new_items.updates,
        "seconds": round(seconds, 1),
    }


def check_no_leakage(files: ModelFiles, warmup: Sequence[Event]) -> None:
    """Raise ValueError when the model knows items that only appear after the warm-up cut."""
    known = {e.item_id for e in warmup}
    leaked = [i for i in files.item_ids if i not in known]
    if leaked:
        raise ValueError(
            f"the model knows {len(leaked)} items absent from the warm-up part of the log "
            f"(e.g. {leaked[0]!r}): it was not trained on the warm-up prefix only"
        )
