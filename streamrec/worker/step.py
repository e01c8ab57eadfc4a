"""One batch through the event path, without Kafka: decode -> fold -> encode -> search -> rank.

``Pipeline.process`` turns a batch of raw records into a ``BatchWrite`` (new user states,
applied event ids, outbox messages: recommendations and dead letters, next offsets). The
worker commits it; replay and benchmarks call the same code.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from streamrec.core.events import Event, RecItem, Recommendation, rec_id_for
from streamrec.core.history import EMPTY, UserState, apply_event
from streamrec.errors import BadEvent
from streamrec.io.codec import dead_letter_headers, decode_event, encode_recommendation
from streamrec.ops.quality import RecObservation
from streamrec.ops.settings import Settings
from streamrec.ranking.arms import Arm, Assignment
from streamrec.ranking.encoder import Encoder
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.rank import demotions, exclusions, rank
from streamrec.state.batch import AppliedEvent, BatchWrite, OutboxMessage, read_versions

if TYPE_CHECKING:
    from streamrec.ranking.explore import ShownItem
    from streamrec.ranking.ranker import Ranker


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record, independent of the Kafka client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class StateReader(Protocol):
    """The reads a batch needs from the store."""

    def applied(self, event_ids: Sequence[str]) -> set[str]: ...

    def load_users(self, user_ids: Sequence[str]) -> dict[str, UserState]: ...


@dataclass
class BatchStats:
    """What happened to a batch, for metrics.

    Attributes:
        outcomes: events per (event type, outcome).
        dead_letters: dead-lettered records per reason code.
        stage_seconds: seconds spent per stage.
        recommended: one observation per recommendation, in order.
        slots: recommended slots per (source, item kind): the source is the candidate source
            that placed the item (``ann``, ``trending``, ``covisit``, ``coldstart``),
            ``explore`` for an exploration slot, ``encoder`` in encoder-only ranking; the kind
            is ``trained`` or ``new`` (an item the model was not trained on).
        new_item_vectors: evidence vectors written to the index for new items.
        arm_events: in an A/B test, fresh events per (arm of the user, event type).
        arm_recommendations: in an A/B test, recommendations per arm.
    """

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    recommended: list[RecObservation] = field(default_factory=list)
    slots: Counter[tuple[str, str]] = field(default_factory=Counter)
    new_item_vectors: int = 0
    arm_events: Counter[tuple[str, str]] = field(default_factory=Counter)
    arm_recommendations: Counter[str] = field(default_factory=Counter)


class Pipeline:
    """Decode, fold, encode, search and rank one batch.

    Args:
        settings: limits, k, topics, history length.
        encoder: turns histories into user vectors.
        index: item vectors and the ANN graph.
        model_version: written into every recommendation.
        clock: seconds since the epoch (a fake in tests).
        max_future_ms: events stamped more than this after ``clock()`` are dead-lettered as
            ``ts_in_future`` (None: no limit).
        max_age_ms: events stamped more than this before ``clock()`` are dead-lettered as
            ``ts_too_old`` (None: no limit; replays of old traffic are legitimate).
        ranker: fused ranking (encoder + trending + co-visitation, exploration); when
            None, the encoder's nearest neighbours alone are ranked.
        trained: ids of the items the model was trained on, which tells new items apart in
            ``BatchStats.slots`` under encoder-only ranking (the ranker knows its own);
            without either, every item counts as trained.
    """

    def __init__(
        self,
        settings: Settings,
        encoder: Encoder,
        index: ItemIndex,
        model_version: str,
        clock: Callable[[], float] = time.time,
        max_future_ms: int | None = None,
        max_age_ms: int | None = None,
        ranker: Ranker | None = None,
        trained: Collection[str] | None = None,
    ) -> None:
        self.settings = settings
        self.ranker = ranker
        self._trained = frozenset(trained) if trained is not None and ranker is None else None
        # the rich lists (source, propensity) of the last batch: (user_id, items) per event
        self.last_shown: list[tuple[str, list[ShownItem]]] = []
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms
        self.encoder = encoder
        self.index = index
        self.model_version = model_version
        self.clock = clock
        self.max_len = min(settings.history_max_len, max(encoder.max_len, 1))
        arms = [Arm(a.name, a.weight, a.overrides()) for a in settings.ab_arms]
        self.assignment = Assignment(arms, settings.ab_salt) if arms else None
        base = settings.impression_demote_strength
        self._strength = {a.name: a.overrides.get("impression_demote_strength", base) for a in arms}
        self.arm_rankers = self._arm_rankers(ranker)

    def _arm_rankers(self, ranker: Ranker | None) -> dict[str, Ranker]:
        """Per A/B arm, a ranker of its policy sharing ``ranker``'s state (none without a
        test; an arm changes the fused ranking only)."""
        if self.assignment is None or ranker is None:
            return {}
        return {a.name: ranker.with_config(a.config(ranker.config)) for a in self.assignment.arms}

    def arm_of(self, user_id: str) -> str | None:
        """The user's A/B arm (None without a test)."""
        return None if self.assignment is None else self.assignment.arm_of(user_id)

    def use_model(
        self,
        encoder: Encoder,
        index: ItemIndex,
        model_version: str,
        ranker: Ranker | None,
        trained: Collection[str] | None = None,
    ) -> None:
        """Rank the following batches with another model (``streamrec.worker.reload``); the
        arguments are the constructor's."""
        self.encoder = encoder
        self.index = index
        self.model_version = model_version
        self.ranker = ranker
        self._trained = frozenset(trained) if trained is not None and ranker is None else None
        self.max_len = min(self.settings.history_max_len, max(encoder.max_len, 1))
        self.arm_rankers = self._arm_rankers(ranker)

    def process(
        self, records: Sequence[Record], store: StateReader, generations: dict[int, int]
    ) -> tuple[BatchWrite, BatchStats]:
        """Turn records of the events topic into one batch write."""
        stats = BatchStats()
        write = BatchWrite(
            topic=self.settings.events_topic,
            generations={p: generations[p] for p in {r.partition for r in records}},
            next_offsets=_next_offsets(records),
        )
        with _timed(stats, "decode"):
            good = self._decode(records, write, stats)
        with _timed(stats, "store"):
            fresh = self._dedupe(good, store, stats)
            current = store.load_users(sorted({e.user_id for _, e in fresh}))
            write.existing_users = set(current)
            write.user_versions = read_versions(current)  # the guards of the users' updates
            snapshots = self._fold(fresh, current, write, stats)
        if not snapshots:
            return write, stats
        arms = [self.arm_of(e.user_id) for _, e, _ in snapshots]
        lists = self._recommend(snapshots, stats, arms)
        now_ms = int(self.clock() * 1000)
        for (rec, event, state), items, arm in zip(snapshots, lists, arms, strict=True):
            try:
                write.messages.append(self._rec_message(rec, event, items, now_ms, arm))
            except ValueError as exc:  # a non-finite score: never published (README)
                bad = BadEvent("bad_score", str(exc))
                write.messages.append(self._dead_letter(rec, bad))
                stats.dead_letters[bad.reason] += 1
                stats.outcomes[(event.type, "dead_letter")] += 1
                continue
            stats.outcomes[(event.type, "recommended")] += 1
            if arm is not None:
                stats.arm_recommendations[arm] += 1
            stats.recommended.append(
                RecObservation(
                    user_id=event.user_id,
                    event_type=event.type,
                    item_id=event.item_id,
                    history_len=len(state.history) - 1,
                    items=tuple(i.item_id for i in items),
                    explored=sum(1 for i in items if i.explored),
                )
            )
        return write, stats

    def _recommend(
        self,
        snapshots: list[tuple[Record, Event, UserState]],
        stats: BatchStats,
        arms: list[str | None],
    ) -> list[tuple[RecItem, ...]]:
        """One ranked list per snapshot: the fused ranker, or encoder + index alone."""
        excl = [exclusions(s, self.settings.exclude_history) for _, _, s in snapshots]
        after, base = (
            self.settings.impression_demote_after,
            self.settings.impression_demote_strength,
        )
        demote = [
            demotions(s, after, base if arm is None else self._strength[arm])
            for (_, _, s), arm in zip(snapshots, arms, strict=True)
        ]
        if self.ranker is not None:
            with _timed(stats, "rank"):
                new_items = self.ranker.new_items
                written = new_items.updates
                # first: new evidence counts at once; an offset already observed (a batch
                # re-read after a failed commit) is not counted again. New items' vectors
                # that fell due are written after the batch is ranked, the graph write in the
                # background (``coldstart``): the next batch sees them.
                events = [(e, r.partition, r.offset) for r, e, _ in snapshots]
                self.ranker.observe_batch(events, defer=True)
                try:
                    shown = self._rank_by_arm(snapshots, excl, demote, arms)
                finally:
                    new_items.write_deferred(background=True)
                stats.new_item_vectors += new_items.updates - written
            self.last_shown = [
                (e.user_id, items) for (_, e, _), items in zip(snapshots, shown, strict=True)
            ]
            for items in shown:
                for s in items:
                    stats.slots[("explore" if s.explored else s.source, self._kind(s.item_id))] += 1
            if not self.settings.output_reasons:
                return [
                    tuple(
                        RecItem(s.item_id, round(float(s.score), 6), s.propensity, s.explored)
                        for s in items
                    )
                    for items in shown
                ]
            return [
                tuple(
                    RecItem(
                        s.item_id,
                        round(float(s.score), 6),
                        s.propensity,
                        s.explored,
                        "explore" if s.explored else s.source,
                        s.anchor,
                    )
                    for s in items
                )
                for items in shown
            ]
        with _timed(stats, "encode"):
            vectors = self.encoder.encode([self._history_vectors(s) for _, _, s in snapshots])
        # demoted items may fall out of the top k: fetch as many more candidates
        fetch = self.settings.top_k + max((len(d) for d in demote), default=0)
        with _timed(stats, "search"):
            found = self.index.search(vectors, fetch, excl)
        lists = [
            rank(cands, self.settings.top_k, skip, self.index.is_live, down)
            for cands, skip, down in zip(found, excl, demote, strict=True)
        ]
        for ranked in lists:
            for item in ranked:
                stats.slots[("encoder", self._kind(item.item_id))] += 1
        if not self.settings.output_reasons:
            return lists
        # the encoder's neighbours of the user, or of the catalog centroid without known history
        index = self.index
        sources = [
            "ann" if any(i in index for i in s.history[-self.max_len :]) else "coldstart"
            for _, _, s in snapshots
        ]
        return [
            tuple(replace(item, source=source) for item in ranked)
            for ranked, source in zip(lists, sources, strict=True)
        ]

    def _rank_by_arm(
        self,
        snapshots: list[tuple[Record, Event, UserState]],
        excl: list[set[str]],
        demote: list[dict[str, float]],
        arms: list[str | None],
    ) -> list[list[ShownItem]]:
        """The fused ranker's lists, each by the ranker of its user's arm (in an A/B test)."""
        assert self.ranker is not None
        groups: dict[str | None, list[int]] = {}
        for row, arm in enumerate(arms):
            groups.setdefault(arm if self.arm_rankers else None, []).append(row)
        shown: list[list[ShownItem]] = [[] for _ in snapshots]
        for arm, rows in groups.items():
            ranker = self.ranker if arm is None else self.arm_rankers[arm]
            lists = ranker.recommend_batch(
                [snapshots[r][2] for r in rows],
                [excl[r] for r in rows],
                self.settings.top_k,
                keys=[snapshots[r][1].event_id for r in rows],
                demote=[demote[r] for r in rows],
            )
            for row, items in zip(rows, lists, strict=True):
                shown[row] = items
        return shown

    def _kind(self, item_id: str) -> str:
        """``new`` for an item the model was not trained on, else ``trained`` (slot metrics)."""
        if self.ranker is not None:
            new = self.ranker.new_items.is_new(item_id)
        else:
            new = self._trained is not None and item_id not in self._trained
        return "new" if new else "trained"

    def _decode(
        self, records: Sequence[Record], write: BatchWrite, stats: BatchStats
    ) -> list[tuple[Record, Event]]:
        good = []
        now_ms = int(self.clock() * 1000)
        for rec in records:
            try:
                event = decode_event(
                    rec.value, rec.key, self.settings.max_event_bytes, self.settings.max_id_len
                )
                if self.settings.unknown_item_policy == "dlq" and event.item_id not in self.index:
                    raise BadEvent("unknown_item", "item_id is in neither model nor catalog")
                self._check_ts(event, now_ms)
                good.append((rec, event))
            except BadEvent as bad:
                write.messages.append(self._dead_letter(rec, bad))
                stats.dead_letters[bad.reason] += 1
                stats.outcomes[("unknown", "dead_letter")] += 1
        return good

    def _check_ts(self, event: Event, now_ms: int) -> None:
        if self.max_future_ms is not None and event.ts > now_ms + self.max_future_ms:
            raise BadEvent("ts_in_future", f"ts more than {self.max_future_ms} ms ahead of now")
        if self.max_age_ms is not None and event.ts < now_ms - self.max_age_ms:
            raise BadEvent("ts_too_old", f"ts more than {self.max_age_ms} ms before now")

    def _dedupe(
        self, good: list[tuple[Record, Event]], store: StateReader, stats: BatchStats
    ) -> list[tuple[Record, Event]]:
        done = store.applied([e.event_id for _, e in good])
        fresh = []
        for rec, event in good:
            if event.event_id in done:
                stats.outcomes[(event.type, "duplicate")] += 1
                continue
            done.add(event.event_id)
            fresh.append((rec, event))
        return fresh

    def _fold(
        self,
        fresh: list[tuple[Record, Event]],
        current: dict[str, UserState],
        write: BatchWrite,
        stats: BatchStats,
    ) -> list[tuple[Record, Event, UserState]]:
        snapshots = []
        for rec, event in fresh:
            state = apply_event(
                write.users.get(event.user_id, current.get(event.user_id, EMPTY)),
                event,
                self.settings.history_max_len,
            )
            write.users[event.user_id] = state
            write.applied.append(AppliedEvent(event, rec.partition, rec.offset))
            if self.assignment is not None:
                stats.arm_events[(self.assignment.arm_of(event.user_id), event.type)] += 1
            if event.is_feedback:  # folded into the state only: never answered (README)
                stats.outcomes[(event.type, "applied")] += 1
            else:
                snapshots.append((rec, event, state))
        return snapshots

    def _history_vectors(self, state: UserState) -> np.ndarray:
        vecs = self.index.vectors_of(state.history[-self.max_len :])
        if len(vecs) == 0:
            # No known item yet: start from the catalog's centroid, a neutral taste.
            return self.index.centroid[None, :].astype(np.float32)
        return vecs

    def _rec_message(
        self, rec: Record, event: Event, items: tuple, now_ms: int, arm: str | None = None
    ) -> OutboxMessage:
        recommendation = Recommendation(
            rec_id=rec_id_for(event.event_id),
            user_id=event.user_id,
            event_id=event.event_id,
            items=items,
            model_version=self.model_version,
            generated_at=now_ms,
            arm=arm,
        )
        return OutboxMessage(
            topic=self.settings.recs_topic,
            partition=rec.partition,
            key=event.user_id.encode("utf-8"),
            value=encode_recommendation(recommendation),
            headers=(("x-streamrec-event-type", event.type.encode()),),
            event_ts_ms=rec.timestamp_ms,
        )

    def _dead_letter(self, rec: Record, bad: BadEvent) -> OutboxMessage:
        return OutboxMessage(
            topic=self.settings.dlq_topic,
            partition=rec.partition,
            key=rec.key,
            value=rec.value,
            headers=dead_letter_headers(
                bad.reason, bad.detail, rec.topic, rec.partition, rec.offset
            ),
            event_ts_ms=rec.timestamp_ms,
        )


def _next_offsets(records: Sequence[Record]) -> dict[int, int]:
    out: dict[int, int] = {}
    for rec in records:
        out[rec.partition] = max(out.get(rec.partition, 0), rec.offset + 1)
    return out


@contextmanager
def _timed(stats: BatchStats, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        stats.stage_seconds[stage] = (
            stats.stage_seconds.get(stage, 0.0) + time.perf_counter() - start
        )
