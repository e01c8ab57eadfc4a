"""The ranker the pipeline calls: candidate sources, fusion, cold start and exploration.

``Ranker.observe(event, partition, offset)`` keeps the stream-fed state up to date (in
memory; its clock is the events' ``ts``): the time-decayed trending list, item-to-item
co-visitation, and vectors of items the model never saw (written to the index at once). Each
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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from streamrec.core.events import CatalogOp, Event
from streamrec.core.history import UserState
from streamrec.ranking.coldstart import NewItemVectors
from streamrec.ranking.covisit import CoVisitation
from streamrec.ranking.encoder import Encoder
from streamrec.ranking.explore import ExplorePool, ListPool, ShownItem, epsilon_slots, request_rng
from streamrec.ranking.fusion import Candidates, Fused, FusionMethod, fuse
from streamrec.ranking.index import ItemIndex
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
        covisit_window: previous events of a user each event is paired with.
        covisit_recent: latest history items whose neighbours are candidates.
        covisit_max_neighbors: neighbours kept per item.
        covisit_half_life_s: half-life of co-visitation counts in event-time seconds (None:
            counts never decay).
        new_item_vectors: give never-trained items vectors from co-occurrence evidence.
        content_weight: weight of catalog content vectors for new items.
        new_item_prior: co-occurrence weight at which a new item's evidence vector reaches
            half of its neighbours' norm (0: full norm from the first co-occurrence).
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
    covisit_window: int = 20
    covisit_recent: int = 5
    covisit_max_neighbors: int = 200
    covisit_half_life_s: float | None = 30 * 86400.0
    new_item_vectors: bool = True
    content_weight: float = 2.0
    new_item_prior: float = 0.0
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
            covisit_window=settings.covisit_window,
            covisit_half_life_s=settings.covisit_half_life_s or None,
            new_item_vectors=settings.new_item_vectors,
            new_item_prior=settings.new_item_prior,
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
        self.trending = Trending(cfg.trending_half_life_s, cfg.event_weights)
        self.covisit = CoVisitation(
            cfg.covisit_window,
            cfg.event_weights,
            max_neighbors=cfg.covisit_max_neighbors,
            half_life_s=cfg.covisit_half_life_s,
        )
        self.new_items = NewItemVectors(
            index, trained, self.covisit, cfg.content_weight, prior=cfg.new_item_prior
        )
        self.max_len = max(encoder.max_len, 1)
        self._next_offsets: dict[int, int] = {}  # per partition: the next offset not yet counted

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
        if not self._take_offset(partition, offset):
            return False
        paired = self._count(event)
        if self.config.new_item_vectors:
            self.new_items.on_pairs(event.item_id, paired)
        return True

    def restore(self, partition: int, events: Sequence[tuple[int, Event]]) -> int:
        """Observe ``(offset, event)`` pairs of one partition, in offset order.

        The same counts as ``observe`` on each of them (offsets already observed are skipped),
        but each touched new item's vector is computed once, at the end (identical to the
        per-event vector unless counts decay and a prior or a content vector weighs in, where
        the later computation sees slightly more decayed evidence).

        Returns:
            the number of events counted.
        """
        touched: set[str] = set()
        counted = 0
        for offset, event in events:
            if self._take_offset(partition, offset):
                touched.add(event.item_id)
                touched.update(self._count(event))
                counted += 1
        if self.config.new_item_vectors and touched:
            self.new_items.write_vectors(touched)
        return counted

    def next_offset(self, partition: int) -> int:
        """The first offset of ``partition`` not observed yet (0 when none was)."""
        return self._next_offsets.get(partition, 0)

    def _take_offset(self, partition: int | None, offset: int | None) -> bool:
        if partition is None or offset is None:
            return True
        if offset < self._next_offsets.get(partition, 0):
            return False
        self._next_offsets[partition] = offset + 1
        return True

    def _count(self, event: Event) -> list[str]:
        """Trending and co-visitation; returns the items the event was paired with."""
        self.trending.observe(event.item_id, event.type, event.ts)
        return self.covisit.observe(event.user_id, event.item_id, event.type, event.ts)

    def observe_catalog(self, op: CatalogOp) -> None:
        """Remember content features of a catalog item (call after the index applied ``op``)."""
        if op.op == "upsert":
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
    ) -> list[list[ShownItem]]:
        """Lists for a batch of users (same order).

        Args:
            states: the users' states after their latest event.
            exclude: per user, items never to show (purchases, history when configured).
            k: list length (default ``config.k``).
            keys: per user, a request key seeding the exploration (e.g. the event id); by
                default derived from the state.
        """
        k = k or self.config.k
        if len(exclude) != len(states):
            raise ValueError("exclude must have one set per state")
        ann = self._ann_candidates(states, exclude)
        out = []
        for row, (state, skip) in enumerate(zip(states, exclude, strict=True)):
            key = keys[row] if keys is not None else _state_key(state)
            out.append(self._one(state, skip, ann[row], k, key))
        return out

    def _one(
        self,
        state: UserState,
        skip: set[str],
        ann: Candidates,
        k: int,
        key: str,
    ) -> list[ShownItem]:
        cfg = self.config
        sources: dict[str, Candidates] = {"ann": ann}
        if "trending" in cfg.sources:
            sources["trending"] = self.trending.top(cfg.pool, skip, self.index.is_live)
        if "covisit" in cfg.sources and state.history:
            sources["covisit"] = self.covisit.candidates(
                state.history, cfg.pool, skip, self.index.is_live, recent=cfg.covisit_recent
            )
        fused = fuse(sources, self.source_weights(state), cfg.fusion, cfg.rrf_k)
        if len(fused) < k:
            fused = _backfill(fused, ann, k)
        exploit = fused[:k]
        pool: ExplorePool | list[Fused] = []
        if cfg.explore_rate > 0:
            pool = self._explore_pool(fused, ann, skip, k)
        return epsilon_slots(exploit, pool, k, cfg.explore_rate, request_rng(cfg.seed, key))

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
        cfg = self.config
        n = self.known_history(state)
        g = n / (n + cfg.blend_half_history) if cfg.blend_half_history > 0 else 1.0
        weights = {
            "ann": cfg.weight_ann * g if n else 0.0,
            "trending": cfg.weight_trending * ((1.0 - g) + g * cfg.trending_floor),
            "covisit": cfg.weight_covisit if state.history else 0.0,
        }
        if cfg.sources == ("ann",):
            weights["ann"] = 1.0
        return {s: w for s, w in weights.items() if s in cfg.sources}

    def known_history(self, state: UserState) -> int:
        """History items (within the encoder's reach) that have a vector."""
        return sum(1 for i in state.history[-self.max_len :] if i in self.index)

    def _ann_candidates(
        self, states: Sequence[UserState], exclude: Sequence[set[str]]
    ) -> list[list[tuple[str, float]]]:
        out: list[list[tuple[str, float]]] = [[] for _ in states]
        if "ann" not in self.config.sources:
            return out
        rows, histories = [], []
        for row, state in enumerate(states):
            vecs = self.index.vectors_of(state.history[-self.max_len :])
            if len(vecs) == 0:
                # no known item yet: the catalog centroid, a neutral taste (the encoder's
                # candidates then only fill short lists and explore, unless ann is alone)
                vecs = self.index.centroid[None, :].astype(np.float32)
            if len(vecs):
                rows.append(row)
                histories.append(vecs)
        if not rows:
            return out
        vectors = self.encoder.encode(histories)
        found = self.index.search(vectors, self.config.pool, [exclude[r] for r in rows])
        for row, cands in zip(rows, found, strict=True):
            out[row] = [(i, s) for i, s in cands if self.index.is_live(i)]
        return out


class CatalogPool:
    """Every live item outside ``exclude``, drawn uniformly through the index (not listed)."""

    def __init__(self, index: ItemIndex, exclude: set[str]) -> None:
        self.index = index
        self.exclude = exclude
        self._size = index.live_count(exclude)

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


def _state_key(state: UserState) -> str:
    last = state.history[-1] if state.history else ""
    return f"{state.n_events}\x00{state.last_ts}\x00{last}"
