"""The ranker the pipeline calls: candidate sources, fusion, cold start and exploration.

``Ranker.observe(event, partition, offset)`` keeps the stream-fed state up to date (in
memory; its clock is the events' ``ts``): the time-decayed trending list, item-to-item
co-visitation, and vectors of items the model never saw (written to the index at once, once the
catalog knows the item: an item id seen only in events is counted but never recommended, by any
source, until the catalog upserts it; ``streamrec.ranking.coldstart``). Each
partition's offsets are counted once (a batch re-read after a failed commit is skipped), and
``restore`` rebuilds the state from a partition's recent events (the worker reads them from
the database when it claims the partition). ``recommend_batch`` replaces the
pipeline's encode -> search -> rank steps for a batch of user states:

1. **Candidates**, ``pool`` per source, every one filtered (the user's exclusions and
   ``index.is_live``): ``ann`` (the sequence encoder + HNSW search, as before), ``trending``
   (``trending.Trending``) and ``covisit`` (neighbours of the latest history items,
   ``covisit.CoVisitation``).
2. **Fusion** (``fusion.fuse``, RRF by default) with per-request source weights that blend
   the personal encoder in as the history grows. With ``n`` = history items that have a
   vector and ``g = n / (n + blend_half_history)``::

       ann      weight_ann * g
       trending weight_trending * ((1 - g) + g * trending_floor)
       covisit  weight_covisit           (0 when the history is empty)

   A new user (``n = 0``) therefore gets the trending list; a long history is mostly the
   encoder. When ``ann`` is the only source it is used even for ``n = 0`` (querying the
   catalog centroid, the pipeline's old behaviour).
   When the fused list is shorter than ``k`` (a new user before any trending evidence exists,
   e.g. on a fresh deployment) it is filled up with the encoder's neighbours of the catalog
   centroid, so every list holds ``k`` items while the catalog has them.
3. **Exploration** (``explore.epsilon_slots``): each slot explores with probability
   ``explore_rate``, showing an item drawn uniformly from a pool outside the exploit top-k
   (``explore_from``): ``"ann"`` (the encoder's candidates: personal, propensities of
   ``rate / explore_pool``), ``"fused"`` (the fused ranking beyond the top-k) or ``"catalog"``
   (every live item: the widest coverage, propensities of ``rate / catalog size``). Every item
   carries its propensity and whether it was explored.

Event-type weights (a purchase counts more than a click) apply to trending and co-visitation.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from streamrec.core.events import CatalogOp, Event
from streamrec.core.history import UserState
from streamrec.ranking.coldstart import NewItemVectors
from streamrec.ranking.covisit import CoVisitation
from streamrec.ranking.encoder import Encoder, encode_bucketed
from streamrec.ranking.explore import ExplorePool, ListPool, ShownItem, epsilon_slots, request_rng
from streamrec.ranking.fusion import (
    ArrayCandidates,
    Candidates,
    Fused,
    FusedArrays,
    FusionMethod,
    fuse_arrays,
    top_positions,
)
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.signals import DeltaRecorder, Outcome, SignalDelta, classify
from streamrec.ranking.trending import Trending

if TYPE_CHECKING:
    from streamrec.ops.settings import Settings

SOURCES = ("ann", "trending", "covisit")
ExploreFrom = Literal["ann", "fused", "catalog"]


@dataclass(frozen=True)
class RankingConfig:
    """Settings of the ranker; the defaults are the worker's (``from_settings``).

    Attributes:
        k: items per list.
        sources: enabled candidate sources, a subset of ``SOURCES``.
        pool: candidates fetched per source.
        fusion: ``"rrf"`` or ``"score"`` (see ``streamrec.ranking.fusion``).
        rrf_k: the RRF constant.
        weight_ann: base weight of the encoder's candidates.
        weight_trending: base weight of the trending list.
        weight_covisit: base weight of co-visitation.
        blend_half_history: history items (with a vector) at which the encoder has half its
            weight.
        trending_floor: share of the trending weight kept for long histories.
        trending_half_life_s: half-life of trending contributions, seconds of event time.
        trending_min_score: decayed score under which a trending row is forgotten when the
            table is pruned (``trending.Trending``; 0: never).
        covisit_window: previous events of a user each event is paired with.
        covisit_recent: latest history items whose neighbours are candidates.
        covisit_max_neighbors: neighbours kept per item.
        covisit_max_users: users whose recent window is remembered (``covisit.CoVisitation``;
            its module docstring gives the memory per user).
        covisit_max_pairs: neighbour entries kept over all items (None: per item only).
        covisit_half_life_s: half-life of co-visitation counts in event-time seconds (None:
            counts never decay).
        new_item_vectors: give never-trained items vectors from co-occurrence evidence.
        content_weight: weight of catalog content vectors for new items.
        new_item_prior: co-occurrence weight at which a new item's evidence vector reaches
            half of its neighbours' norm (0: full norm from the first co-occurrence).
        new_item_refresh_ratio: a new item's vector is rewritten once its evidence events
            since the last write reach this share of those counted then (``coldstart``).
        event_weights: weight per event type (trending and co-visitation).
        explore_rate: probability that a slot explores (0 disables exploration).
        explore_from: where exploration slots draw from (module docstring): ``"ann"``,
            ``"fused"`` or ``"catalog"``.
        explore_pool: size of the ``"ann"`` and ``"fused"`` exploration pools.
        seed: seed of the exploration policy.
    """

    k: int = 10
    sources: tuple[str, ...] = SOURCES
    pool: int = 100
    fusion: FusionMethod = "rrf"
    rrf_k: float = 60.0
    weight_ann: float = 1.0
    weight_trending: float = 0.5
    weight_covisit: float = 1.5
    blend_half_history: float = 3.0
    trending_floor: float = 0.0
    trending_half_life_s: float = 7 * 86400.0
    trending_min_score: float = 0.001
    covisit_window: int = 20
    covisit_recent: int = 5
    covisit_max_neighbors: int = 200
    covisit_max_users: int = 150_000
    covisit_max_pairs: int | None = 3_000_000
    covisit_half_life_s: float | None = 30 * 86400.0
    new_item_vectors: bool = True
    content_weight: float = 2.0
    new_item_prior: float = 0.0
    new_item_refresh_ratio: float = 0.5
    event_weights: dict[str, float] = field(default_factory=lambda: {"click": 1.0, "purchase": 3.0})
    explore_rate: float = 0.03
    explore_from: ExploreFrom = "catalog"
    explore_pool: int = 100
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RankingConfig:
        """The worker's configuration (``STREAMREC_*`` settings; README's table)."""
        return cls(
            k=settings.top_k,
            pool=settings.candidate_pool,
            fusion=settings.fusion_method,
            rrf_k=settings.fusion_rrf_k,
            weight_ann=settings.weight_ann,
            weight_trending=settings.weight_trending,
            weight_covisit=settings.weight_covisit,
            blend_half_history=settings.blend_half_history,
            trending_floor=settings.trending_floor,
            trending_half_life_s=settings.trending_half_life_s,
            trending_min_score=settings.trending_min_score,
            covisit_window=settings.covisit_window,
            covisit_max_users=settings.covisit_max_users,
            covisit_max_pairs=settings.covisit_max_pairs,
            covisit_half_life_s=settings.covisit_half_life_s or None,
            new_item_vectors=settings.new_item_vectors,
            new_item_prior=settings.new_item_prior,
            new_item_refresh_ratio=settings.new_item_refresh_ratio,
            event_weights={"click": 1.0, "purchase": settings.purchase_weight},
            explore_rate=settings.explore_rate,
            explore_from=settings.explore_from,
            explore_pool=settings.explore_pool,
            seed=settings.explore_seed,
        )

    def __post_init__(self) -> None:
        unknown = set(self.sources) - set(SOURCES)
        if unknown or not self.sources:
            raise ValueError(f"sources must be a non-empty subset of {SOURCES}, got {self.sources}")
        if self.k < 1 or self.pool < 1 or self.explore_pool < 0:
            raise ValueError("k and pool must be >= 1, explore_pool >= 0")
        if not 0.0 <= self.explore_rate < 1.0:
            raise ValueError(f"explore_rate must be in [0, 1), got {self.explore_rate}")


class Ranker:
    """Stream-fed candidate sources, fused and explored.

    Args:
        encoder: the sequence encoder.
        index: the live item index (new-item vectors are written into it).
        config: the settings.
        trained: ids of the items the model was trained on (default: every item in the index
            at construction is taken as trained by the caller's choice -- pass it explicitly).
    """

    def __init__(
        self,
        encoder: Encoder,
        index: ItemIndex,
        config: RankingConfig | None = None,
        trained: Sequence[str] = (),
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.config = config or RankingConfig()
        cfg = self.config
        self.trending = Trending(
            cfg.trending_half_life_s, cfg.event_weights, prune_below=cfg.trending_min_score
        )
        self.covisit = CoVisitation(
            cfg.covisit_window,
            cfg.event_weights,
            max_neighbors=cfg.covisit_max_neighbors,
            max_users=cfg.covisit_max_users,
            max_pairs=cfg.covisit_max_pairs,
            half_life_s=cfg.covisit_half_life_s,
        )
        self.new_items = self._new_item_vectors(index, trained)
        self.max_len = max(encoder.max_len, 1)
        self._next_offsets: dict[int, int] = {}  # per partition: the next offset not yet counted
        # records what this ranker counts, for the other workers (``signals``; None: nobody)
        self.recorder: DeltaRecorder | None = None
        # index label of each co-visitation key (-1: unknown to the index when looked up)
        self._covisit_labels = np.zeros(0, dtype=np.int64)
        self._covisit_index_labels = index.n_labels  # index size at the last lookup

    def with_model(self, encoder: Encoder, index: ItemIndex, trained: Sequence[str]) -> Ranker:
        """A ranker for another model (its encoder, index and trained items) that shares this
        one's stream state: trending, co-visitation and the offsets counted (none of them
        depends on the model). New items start without evidence vectors in the new index:
        each gets one at its next event (``coldstart``), catalog content vectors are dropped
        (they are in the old model's space; ``streamrec.ranking.reembed``). Use one or the
        other afterwards, never both."""
        other = Ranker(encoder, index, self.config, trained)
        other.trending = self.trending
        other.covisit = self.covisit
        other._next_offsets = self._next_offsets
        other.recorder = self.recorder
        other.new_items = self._new_item_vectors(index, trained)
        return other

    def _new_item_vectors(self, index: ItemIndex, trained: Collection[str]) -> NewItemVectors:
        """New-item vectors in ``index`` from this ranker's co-visitation counts."""
        cfg = self.config
        return NewItemVectors(
            index,
            trained,
            self.covisit,
            cfg.content_weight,
            prior=cfg.new_item_prior,
            refresh_ratio=cfg.new_item_refresh_ratio,
        )

    def with_config(self, config: RankingConfig) -> Ranker:
        """A ranker of another policy (an A/B arm, ``streamrec.ranking.arms``) over this one's
        model and stream state, shared, not copied: only this one should observe events."""
        if (config.trending_half_life_s, config.covisit_window, config.event_weights) != (
            self.config.trending_half_life_s,
            self.config.covisit_window,
            self.config.event_weights,
        ):
            raise ValueError("an arm cannot change how the shared stream state is counted")
        other = Ranker(self.encoder, self.index, config)
        other.trending = self.trending
        other.covisit = self.covisit
        other.new_items = self.new_items
        other._next_offsets = self._next_offsets
        other.recorder = self.recorder
        return other

    # -- state ---------------------------------------------------------------------------
    def observe(
        self, event: Event, partition: int | None = None, offset: int | None = None
    ) -> bool:
        """Update trending, co-visitation and new-item vectors with one (fresh) event.

        Args:
            event: the event.
            partition: its input partition; None (e.g. a replay's warm-up) always counts.
            offset: its offset in ``partition``.

        Returns:
            False, counting nothing, when this partition's ``offset`` was already observed
            (a batch re-read after a failed commit, or restored from the database).
        """
        return self.observe_batch([(event, partition, offset)]) == 1

    def observe_batch(
        self, events: Sequence[tuple[Event, int | None, int | None]], defer: bool = False
    ) -> int:
        """``observe`` each ``(event, partition, offset)`` in turn, writing each new item's
        vector that fell due at most once, after the last event (the vector ``observe`` would
        have written last: it depends only on the item's own counts). For a batch that is
        recommended after all its events were counted, the lists are the same.

        With ``defer`` the due vectors are only remembered: the caller writes them with
        ``new_items.write_deferred`` (the pipeline does, after ranking the batch).

        Returns:
            the number of events counted.
        """
        due: set[str] = set()
        counted = 0
        vectors = self.config.new_item_vectors
        for event, partition, offset in events:
            if not self._take_offset(partition, offset) or event.is_feedback:
                continue  # impressions and dismissals are no evidence of interest
            paired = self._count(event, partition)
            if vectors:
                due.update(self.new_items.touch(event.item_id, paired))
            counted += 1
        if defer:
            self.new_items.defer(due)
        elif due:
            self.new_items.write_vectors(due)
        return counted

    def restore(self, partition: int, events: Sequence[tuple[int, Event]]) -> int:
        """Observe ``(offset, event)`` pairs of one partition, in offset order.

        The same counts as ``observe`` on each of them (offsets already observed are not
        counted again; they only fill the co-visitation window of a user who has none yet, as
        after a partition move when the counts came from the previous owner's deltas),
        but each touched new item's vector is computed once, at the end (identical to the
        per-event vector unless counts decay and a prior or a content vector weighs in, where
        the later computation sees slightly more decayed evidence).

        Returns:
            the number of events counted.
        """
        touched: set[str] = set()
        counted = 0
        primed: set[str] = set()  # users whose co-visitation window this call started
        covisit = self.covisit
        for offset, event in events:
            if offset < self._next_offsets.get(partition, 0):
                # counted already (merged from another worker's deltas): only the user's
                # window learns it, so that the user's next events pair as they would have
                user = event.user_id
                if not event.is_feedback and (user in primed or not covisit.has_window(user)):
                    covisit.prime(user, event.item_id, event.type)
                    primed.add(user)
                continue
            if self._take_offset(partition, offset) and not event.is_feedback:
                paired = self._count(event, partition)
                touched.add(event.item_id)
                touched.update(paired)
                # the evidence is counted as in ``observe``, so that the refresh schedule
                # after a restart continues from it (not from zero: every touch due again)
                self.new_items.touch(event.item_id, paired)
                counted += 1
        if self.recorder is not None:  # a restored range is published on its own (signals)
            self.recorder.close(partition)
        if self.config.new_item_vectors and touched:
            self.new_items.write_vectors(touched)
        return counted

    def next_offset(self, partition: int) -> int:
        """The first offset of ``partition`` not observed yet (0 when none was)."""
        return self._next_offsets.get(partition, 0)

    def _take_offset(self, partition: int | None, offset: int | None) -> bool:
        if partition is None or offset is None:
            return True
        watermark = self._next_offsets.get(partition, 0)
        if offset < watermark:
            return False
        self._next_offsets[partition] = offset + 1
        if self.recorder is not None:
            self.recorder.offset(partition, watermark, offset)
        return True

    def _count(self, event: Event, partition: int | None = None) -> list[str]:
        """Trending and co-visitation; returns the items the event was paired with."""
        self.trending.observe(event.item_id, event.type, event.ts)
        cv = self.covisit
        paired = cv.observe(event.user_id, event.item_id, event.type, event.ts)
        if self.recorder is not None and partition is not None:
            weight = self.trending.event_weights.get(event.type, 1.0)
            pairs = zip(paired, cv.last_pair_weights, strict=True)
            self.recorder.count(partition, event.item_id, weight, event.ts, pairs)
        return paired

    def merge_signals(self, delta: SignalDelta) -> Outcome:
        """Merge another worker's delta into trending and co-visitation, once per offset
        range (``streamrec.ranking.signals``: duplicates and straddling deltas are skipped)."""
        outcome = classify(self._next_offsets.get(delta.partition, 0), delta)
        if outcome != "applied":
            return outcome
        self._next_offsets[delta.partition] = delta.end
        for item_id, weight in delta.items:
            self.trending.add(item_id, weight, delta.ts_ms)
        touched: set[str] = set()
        for a, b, weight in delta.pairs:
            self.covisit.add_pair(a, b, weight, delta.ts_ms)
            touched.update((a, b))
        if self.config.new_item_vectors and touched:
            self.new_items.write_vectors(touched)
        return outcome

    def stream_state_sizes(self) -> dict[str, tuple[int, int]]:
        """Per part of the stream state: (entries held, entries forgotten so far); O(1).

        The parts are trending items (``trending_min_score``), co-visitation user windows
        (``covisit_max_users``) and neighbour pairs (``covisit_max_pairs``), for metrics.
        """
        cv = self.covisit
        return {
            "trending_items": (len(self.trending), self.trending.pruned),
            "covisit_users": (cv.users, cv.forgotten_users),
            "covisit_pairs": (cv.pairs, cv.evicted_pairs),
        }

    def observe_catalog(self, op: CatalogOp) -> None:
        """Remember content features of a catalog item (call after the index applied ``op``)."""
        if op.op == "upsert":
            if self.config.new_item_vectors:  # evidence counted before the catalog knew it
                self.new_items.on_catalog_upsert(op.item_id, op.vector)
            else:
                self.new_items.set_content(op.item_id, op.vector)
        # deletes and unavailable upserts hide a new item
        self.new_items.update_searchable(op.item_id)

    # -- serving -------------------------------------------------------------------------
    def recommend_batch(
        self,
        states: Sequence[UserState],
        exclude: Sequence[set[str]],
        k: int | None = None,
        keys: Sequence[str] | None = None,
        demote: Sequence[Mapping[str, float]] | None = None,
    ) -> list[list[ShownItem]]:
        """Lists for a batch of users (same order).

        Per batch: one encoder run per bucket of similar history lengths, one ``knn_query``
        per hnswlib beam, one trending head (filtered per user); per user, array code over
        item labels (exclusions as a mask) and an exploration pool built only when a slot
        explores. The lists are those of the per-request rule in the module docstring.

        Args:
            states: the users' states after their latest event.
            exclude: per user, items never to show (purchases, history when configured).
            k: list length (default ``config.k``).
            keys: per user, a request key seeding the exploration (e.g. the event id); by
                default derived from the state.
            demote: per user, score multipliers of items shown too often without a click
                (``rank.demotions``), applied to the fused scores before the top-k and the
                exploration pools are taken; by default none.
        """
        k = k or self.config.k
        if len(exclude) != len(states):
            raise ValueError("exclude must have one set per state")
        index = self.index
        reach = [index.labels_of(state.history[-self.max_len :]) for state in states]
        skips = [index.known_labels(skip) for skip in exclude]
        ann = self._ann_arrays(reach, exclude, skips)
        trending = self._trending_head(max((len(skip) for skip in exclude), default=0))
        self._refresh_covisit_labels()
        mask = np.zeros(index.n_labels, dtype=bool)  # the current user's excluded labels
        scratch = np.zeros(index.n_labels, dtype=np.int64)  # fusion's work array
        factors = np.ones(index.n_labels if demote and any(demote) else 0)  # demotions' one
        out = []
        for row, state in enumerate(states):
            key = keys[row] if keys is not None else _state_key(state)
            down = demote[row] if demote is not None else None
            request = _Request(
                state, exclude[row], skips[row], int((reach[row] >= 0).sum()), down or None
            )
            mask[request.skip_labels] = True
            try:
                shown = self._one(request, mask, scratch, factors, ann[row], trending, k, key)
                out.append(self._with_reasons(request, shown))
            finally:
                mask[request.skip_labels] = False
        return out

    def _one(
        self,
        request: _Request,
        mask: np.ndarray,
        scratch: np.ndarray,
        factors: np.ndarray,
        ann: ArrayCandidates,
        trending: ArrayCandidates | None,
        k: int,
        key: str,
    ) -> list[ShownItem]:
        cfg = self.config
        ids_of = self.index.ids_of
        sources: dict[str, ArrayCandidates] = {"ann": ann}
        if trending is not None:
            keep = ~mask[trending[0]]
            sources["trending"] = (trending[0][keep][: cfg.pool], trending[1][keep][: cfg.pool])
        if "covisit" in cfg.sources and request.state.history:
            sources["covisit"] = self._covisit_arrays(request.state.history, mask)
        weights = self._weights(request.known, bool(request.state.history))
        fused = fuse_arrays(sources, weights, cfg.fusion, cfg.rrf_k, scratch)
        if request.demote:
            fused = self._demoted(fused, request.demote, factors)
        rng = request_rng(cfg.seed, key)
        pool: ExplorePool | list[Fused] = []
        if len(fused) < k:  # rare: a short list, filled up from the encoder's candidates
            ann_list = list(zip(ids_of(ann[0].tolist()), ann[1].tolist(), strict=True))
            full = _backfill(
                fused.fused(fused.ranked(len(fused), self.index.id_order), ids_of), ann_list, k
            )
            if cfg.explore_rate > 0:
                pool = self._explore_pool(full, ann_list, request.exclude, k)
            return epsilon_slots(full[:k], pool, k, cfg.explore_rate, rng)
        top = fused.ranked(k, self.index.id_order)
        exploit = fused.fused(top, ids_of)
        if cfg.explore_rate > 0:
            pool = self._lazy_explore_pool(request, mask, fused, top, ann, k)
        return epsilon_slots(exploit, pool, k, cfg.explore_rate, rng)

    def _with_reasons(self, request: _Request, shown: list[ShownItem]) -> list[ShownItem]:
        """Name each item's reason: a co-visited item's anchor (the history item it was
        co-visited with), and ``coldstart`` for the encoder's candidates of a user without
        known history (they are the catalog centroid's neighbours)."""
        out = []
        for s in shown:
            if s.explored:
                out.append(s)
            elif s.source == "covisit":
                history, recent = request.state.history, self.config.covisit_recent
                anchor = self.covisit.anchor(history, s.item_id, recent)
                out.append(ShownItem(s.item_id, s.score, s.propensity, False, s.source, anchor))
            elif s.source == "ann" and request.known == 0:
                out.append(ShownItem(s.item_id, s.score, s.propensity, False, "coldstart"))
            else:
                out.append(s)
        return out

    def _demoted(
        self, fused: FusedArrays, demote: Mapping[str, float], factors: np.ndarray
    ) -> FusedArrays:
        """``fused`` with the scores of the demoted items multiplied by their factors (fused
        scores are sums of non-negative parts: a factor below 1 only lowers them).

        ``factors`` is a work array of ones, one per index label, left as it was found.
        """
        labels = self.index.labels_of(demote)
        known = labels >= 0
        labels = labels[known]
        factors[labels] = np.fromiter(demote.values(), np.float64, len(demote))[known]
        try:
            scores = fused.scores * factors[fused.keys]
        finally:
            factors[labels] = 1.0
        return FusedArrays(fused.keys, scores, fused.parts)

    def _lazy_explore_pool(
        self,
        request: _Request,
        mask: np.ndarray,
        fused: FusedArrays,
        top: np.ndarray,
        ann: ArrayCandidates,
        k: int,
    ) -> ExplorePool:
        """``_explore_pool`` for a list of at least ``k`` fused items: its size now (exact),
        its items only when a slot explores."""
        cfg = self.config
        index = self.index
        ids_of = index.ids_of
        shown = fused.keys[top]
        if cfg.explore_from == "catalog":
            # live items outside skip | shown: every live excluded label, then every live shown
            # item that is not excluded (labels of a set are distinct)
            excluded = int(np.count_nonzero(index.live_mask(request.skip_labels)))
            excluded += int(np.count_nonzero(index.live_mask(shown) & ~mask[shown]))
            size = index.size - excluded
            skip = request.exclude
            return _LazyPool(
                size, lambda: CatalogPool(index, skip | set(ids_of(shown.tolist())), size)
            )
        if cfg.explore_from == "fused":
            size = max(0, min(cfg.explore_pool, len(fused) - k))
            return _LazyPool(
                size,
                lambda: ListPool(
                    fused.fused(fused.ranked(k + cfg.explore_pool, index.id_order)[k:], ids_of)
                ),
            )
        tail = ann[0][~np.isin(ann[0], shown)][: cfg.explore_pool]
        return _LazyPool(
            len(tail),
            lambda: ListPool(
                [
                    Fused(item_id, score, "ann")
                    for item_id, score in zip(
                        ids_of(tail.tolist()), fused.score_of(tail).tolist(), strict=True
                    )
                ]
            ),
        )

    def _explore_pool(
        self, fused: list[Fused], ann: Candidates, skip: set[str], k: int
    ) -> ExplorePool:
        """Exploration candidates outside the exploit top-k (``explore_from``)."""
        cfg = self.config
        if cfg.explore_from == "fused":
            return ListPool(fused[k : k + cfg.explore_pool])
        shown = {f.item_id for f in fused[:k]}
        if cfg.explore_from == "catalog":
            return CatalogPool(self.index, skip | shown)
        fused_score = {f.item_id: f.score for f in fused}
        tail = [Fused(i, fused_score.get(i, 0.0), "ann") for i, _ in ann if i not in shown]
        return ListPool(tail[: cfg.explore_pool])

    def source_weights(self, state: UserState) -> dict[str, float]:
        """The per-request source weights (module docstring)."""
        return self._weights(self.known_history(state), bool(state.history))

    def _weights(self, n: int, has_history: bool) -> dict[str, float]:
        cfg = self.config
        g = n / (n + cfg.blend_half_history) if cfg.blend_half_history > 0 else 1.0
        weights = {
            "ann": cfg.weight_ann * g if n else 0.0,
            "trending": cfg.weight_trending * ((1.0 - g) + g * cfg.trending_floor),
            "covisit": cfg.weight_covisit if has_history else 0.0,
        }
        if cfg.sources == ("ann",):
            weights["ann"] = 1.0
        return {s: w for s, w in weights.items() if s in cfg.sources}

    def known_history(self, state: UserState) -> int:
        """History items (within the encoder's reach) that have a vector."""
        return sum(1 for i in state.history[-self.max_len :] if i in self.index)

    def _ann_arrays(
        self,
        reach: Sequence[np.ndarray],
        exclude: Sequence[set[str]],
        skips: Sequence[np.ndarray],
    ) -> list[ArrayCandidates]:
        """Per user, the encoder's live candidates (labels, scores), best first."""
        if "ann" not in self.config.sources:
            return [_NO_CANDIDATES] * len(reach)
        index = self.index
        histories = []
        for labels in reach:
            known = labels[labels >= 0]
            if len(known):
                histories.append(index.vectors_at(known))
            else:
                # no known item yet: the catalog centroid, a neutral taste (the encoder's
                # candidates then only fill short lists and explore, unless ann is alone)
                histories.append(index.centroid[None, :].astype(np.float32))
        if not histories:
            return []
        vectors = encode_bucketed(self.encoder, histories)
        found = index.search_labels(vectors, self.config.pool, exclude, skips)
        out = []
        for labels, scores in found:
            live = index.live_mask(labels)
            out.append((labels, scores) if live.all() else (labels[live], scores[live]))
        return out

    def _trending_head(self, widest_skip: int) -> ArrayCandidates | None:
        """The trending list's first ``pool + widest_skip`` live items (labels, scores).

        Filtering it by a user's exclusions (at most ``widest_skip`` of them) leaves at least
        ``pool`` items, or every live item: exactly ``Trending.top(pool, skip, is_live)``.
        """
        if "trending" not in self.config.sources:
            return None
        head = self.trending.top(self.config.pool + widest_skip, None, self.index.is_live)
        labels = self.index.labels_of(item_id for item_id, _ in head)
        return labels, np.fromiter((score for _, score in head), np.float64, len(head))

    def _refresh_covisit_labels(self) -> None:
        """Look up again the co-visited ids the index did not know, when it has grown."""
        if self.index.n_labels == self._covisit_index_labels:
            return
        self._covisit_index_labels = self.index.n_labels
        missing = np.flatnonzero(self._covisit_labels < 0)
        if len(missing):
            names = self.covisit.names
            self._covisit_labels[missing] = self.index.labels_of(names[i] for i in missing.tolist())

    def _covisit_arrays(self, history: Sequence[str], mask: np.ndarray) -> ArrayCandidates:
        """``covisit.candidates(history, pool, skip, is_live, recent)`` as (labels, scores)."""
        keys, scores = self.covisit.candidate_scores(history, recent=self.config.covisit_recent)
        if not len(keys):
            return _NO_CANDIDATES
        names = self.covisit.names
        have = len(self._covisit_labels)
        if len(names) > have:  # items co-visited for the first time since the last lookup
            self._covisit_labels = np.concatenate(
                [self._covisit_labels, self.index.labels_of(names[have:])]
            )
        labels = self._covisit_labels[keys]
        ok = self.index.live_mask(labels) & ~mask[np.maximum(labels, 0)]
        labels, scores = labels[ok], scores[ok]
        top = top_positions(scores, self.config.pool, labels, self.index.id_order)
        return labels[top], scores[top]


@dataclass(frozen=True, slots=True)
class _Request:
    state: UserState
    exclude: set[str]
    skip_labels: np.ndarray  # labels of the excluded ids the index knows (distinct)
    known: int  # history items within the encoder's reach that have a vector
    demote: Mapping[str, float] | None = None  # score multipliers (rank.demotions)


class _LazyPool:
    """An exploration pool of known size whose items are listed only when drawn from."""

    def __init__(self, size: int, build: Callable[[], ExplorePool]) -> None:
        self._size = size
        self._build = build

    def __len__(self) -> int:
        return self._size

    def draw(self, rng: np.random.Generator, n: int) -> list[Fused]:
        """``n`` distinct items of the pool, uniformly without replacement."""
        if n <= 0:
            return []
        return self._build().draw(rng, n)


class CatalogPool:
    """Every live item outside ``exclude``, drawn uniformly through the index (not listed).

    ``size``, when the caller knows it, must be ``index.live_count(exclude)``.
    """

    def __init__(self, index: ItemIndex, exclude: set[str], size: int | None = None) -> None:
        self.index = index
        self.exclude = exclude
        self._size = index.live_count(exclude) if size is None else size

    def __len__(self) -> int:
        return self._size

    def draw(self, rng: np.random.Generator, n: int) -> list[Fused]:
        """``n`` distinct items, uniformly without replacement."""
        return [Fused(i, 0.0, "explore") for i in self.index.sample_live(rng, n, self.exclude)]


def _backfill(fused: list[Fused], ann: Candidates, k: int) -> list[Fused]:
    """Fill a short fused list up to ``k`` from the encoder's candidates (score 0)."""
    have = {f.item_id for f in fused}
    extra = [Fused(i, 0.0, "ann") for i, _ in ann if i not in have]
    return [*fused, *extra[: k - len(fused)]]


_NO_CANDIDATES: ArrayCandidates = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))


def _state_key(state: UserState) -> str:
    last = state.history[-1] if state.history else ""
    return f"{state.n_events}\x00{state.last_ts}\x00{last}"
