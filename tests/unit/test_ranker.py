"""The composed ranker: blending by history length, filters, propensities, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.core.history import EMPTY, UserState, apply_event
from streamrec.ranking.explore import ExplorePool, ListPool, ShownItem, epsilon_slots, request_rng
from streamrec.ranking.fusion import Fused, fuse
from streamrec.ranking.rank import exclusions
from streamrec.ranking.ranker import CatalogPool, Ranker, RankingConfig
from streamrec.testing import MeanEncoder, make_event, random_index


def make_ranker(**overrides: object) -> Ranker:
    index = random_index(n_items=80, dim=8, seed=2)
    config = RankingConfig(**{"pool": 30, **overrides})  # type: ignore[arg-type]
    return Ranker(MeanEncoder(dim=8), index, config, trained=[f"i{n}" for n in range(80)])


def feed(rec: Ranker) -> None:
    ts = 1_700_000_000_000
    for n in range(200):
        user, item = f"u{n % 7}", f"i{(n * 7) % 13 if n % 3 else 5}"
        rec.observe(make_event(user_id=user, item_id=item, ts=ts + n * 1000))


def test_a_new_user_gets_the_trending_list() -> None:
    rec = make_ranker(explore_rate=0.0)
    feed(rec)
    [shown] = rec.recommend_batch([EMPTY], [set()], 5)
    assert [s.item_id for s in shown] == [i for i, _ in rec.trending.top(5)]
    assert {s.source for s in shown} == {"trending"}
    full = rec.config.weight_trending  # the whole trending weight, nothing else
    assert rec.source_weights(EMPTY) == {"ann": 0.0, "trending": full, "covisit": 0.0}


def test_the_encoder_weight_grows_with_history() -> None:
    rec = make_ranker(blend_half_history=2.0, trending_floor=0.0)
    short = UserState(history=("i1",), n_events=1)
    long = UserState(history=tuple(f"i{n}" for n in range(18)), n_events=18)
    ws, wl = rec.source_weights(short), rec.source_weights(long)
    assert ws["ann"] == pytest.approx(1 / 3) and wl["ann"] == pytest.approx(0.9)
    assert ws["trending"] > wl["trending"]


def test_encoder_only_matches_the_pipelines_search() -> None:
    rec = make_ranker(sources=("ann",), explore_rate=0.0, new_item_vectors=False)
    state = UserState(history=("i1", "i2", "i3"), n_events=3)
    [shown] = rec.recommend_batch([state], [set(state.history)], 10)
    query = rec.encoder.encode([rec.index.vectors_of(state.history)])
    expected = rec.index.search(query, 10, [set(state.history)])[0]
    assert [s.item_id for s in shown] == [i for i, _ in expected]
    [cold] = rec.recommend_batch([EMPTY], [set()], 10)  # the centroid query, as before
    assert len(cold) == 10


@given(
    st.integers(0, 500),
    st.sampled_from([0.0, 0.2, 0.5]),
    st.sampled_from(["ann", "fused", "catalog"]),
)
def test_lists_never_show_filtered_items_and_carry_propensities(seed, rate, pool) -> None:
    rec = make_ranker(explore_rate=rate, seed=seed, explore_from=pool)
    feed(rec)
    rec.index.remove("i5")
    state = UserState(history=("i1", "i7", "i9"), purchased=("i9",), n_events=3)
    skip = {"i1", "i7", "i9", "i40"}
    [shown] = rec.recommend_batch([state], [skip], 10, keys=[f"k{seed}"])
    ids = [s.item_id for s in shown]
    assert len(ids) == len(set(ids)) == 10
    assert not set(ids) & (skip | {"i5"})
    assert all(0.0 < s.propensity <= 1.0 for s in shown)
    if rate == 0.0:
        assert all(s.propensity == 1.0 and not s.explored for s in shown)
    explored = [s for s in shown if s.explored]
    if pool == "catalog" and explored:  # every live, unfiltered item outside the top-k
        assert explored[0].propensity == pytest.approx(rate / (80 - 1 - 4 - 10))
    if pool == "ann" and explored:  # the encoder's candidates outside the top-k (pool 30)
        query = rec.encoder.encode([rec.index.vectors_of(state.history)])
        ann = [i for i, _ in rec.index.search(query, 30, [skip])[0]]
        exploit = {s.item_id for s in shown if not s.explored}
        assert {s.item_id for s in explored} <= set(ann) - exploit
        assert explored[0].propensity <= rate / (30 - 10)


def test_catalog_exploration_draws_every_eligible_item_uniformly() -> None:
    rec = make_ranker(explore_rate=0.5, explore_from="catalog")
    feed(rec)
    state = UserState(history=("i1",), n_events=1)
    counts: dict[str, int] = {}
    for n in range(400):
        [shown] = rec.recommend_batch([state], [{"i1"}], 10, keys=[f"k{n}"])
        for s in shown:
            if s.explored:
                counts[s.item_id] = counts.get(s.item_id, 0) + 1
                assert s.propensity == pytest.approx(0.5 / (80 - 1 - 10))
    # 2,000 draws over 69 eligible items: every one shows up, none dominates
    assert len(counts) == 69
    assert max(counts.values()) < 3 * sum(counts.values()) / 69


def test_a_new_user_gets_k_items_before_any_trending_evidence() -> None:
    rec = make_ranker(explore_rate=0.0)  # nothing observed: trending and co-visitation empty
    [shown] = rec.recommend_batch([EMPTY], [{"i3"}], 10)
    assert len({s.item_id for s in shown}) == 10 and "i3" not in {s.item_id for s in shown}
    assert {s.source for s in shown} == {"ann"} and all(s.score == 0.0 for s in shown)
    feed(rec)  # once trending exists it leads, and the encoder only fills the rest
    [warm] = rec.recommend_batch([EMPTY], [set()], 10)
    top = [i for i, _ in rec.trending.top(10)]
    assert [s.item_id for s in warm][: len(top)] == top


def test_the_worker_settings_map_onto_the_default_config() -> None:
    from streamrec.ops.settings import load_settings

    assert RankingConfig.from_settings(load_settings()) == RankingConfig()
    custom = load_settings(explore_from="catalog", covisit_half_life_s=60.0, weight_covisit=2.0)
    config = RankingConfig.from_settings(custom)
    assert (config.explore_from, config.covisit_half_life_s, config.weight_covisit) == (
        "catalog",
        60.0,
        2.0,
    )


def test_same_seed_same_lists_and_a_rate_explores_about_that_share() -> None:
    rec = make_ranker(explore_rate=0.2, seed=4)
    feed(rec)
    states = [UserState(history=(f"i{n}", f"i{n + 1}"), n_events=2) for n in range(60)]
    skip = [set(s.history) for s in states]
    a = rec.recommend_batch(states, skip, 10)
    assert a == rec.recommend_batch(states, skip, 10)
    share = sum(s.explored for lst in a for s in lst) / 600
    assert share == pytest.approx(0.2, abs=0.06)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="sources"):
        RankingConfig(sources=("nope",))
    with pytest.raises(ValueError, match="explore_rate"):
        RankingConfig(explore_rate=1.5)
    rec = make_ranker()
    with pytest.raises(ValueError, match="one set per state"):
        rec.recommend_batch([EMPTY], [], 5)


# -- the batched path equals the per-request rule -------------------------------------------


def reference_lists(
    rec: Ranker, states: list[UserState], exclude: list[set[str]], k: int, keys: list[str]
) -> list[list[ShownItem]]:
    """The module docstring's rule, one request at a time, from the sources' public methods."""
    cfg, index = rec.config, rec.index
    out = []
    for state, skip, key in zip(states, exclude, keys, strict=True):
        ann: list[tuple[str, float]] = []
        if "ann" in cfg.sources:
            vecs = index.vectors_of(state.history[-rec.max_len :])
            if len(vecs) == 0:
                vecs = index.centroid[None, :].astype(np.float32)
            (found,) = index.search(rec.encoder.encode([vecs]), cfg.pool, [skip])
            ann = [(i, s) for i, s in found if index.is_live(i)]
        sources: dict[str, list[tuple[str, float]]] = {"ann": ann}
        if "trending" in cfg.sources:
            sources["trending"] = rec.trending.top(cfg.pool, skip, index.is_live)
        if "covisit" in cfg.sources and state.history:
            sources["covisit"] = rec.covisit.candidates(
                state.history, cfg.pool, skip, index.is_live, recent=cfg.covisit_recent
            )
        fused = fuse(sources, rec.source_weights(state), cfg.fusion, cfg.rrf_k)
        if len(fused) < k:
            have = {f.item_id for f in fused}
            extra = [Fused(i, 0.0, "ann") for i, _ in ann if i not in have]
            fused = [*fused, *extra[: k - len(fused)]]
        shown = {f.item_id for f in fused[:k]}
        pool: ExplorePool | list[Fused] = []
        if cfg.explore_rate > 0 and cfg.explore_from == "fused":
            pool = ListPool(fused[k : k + cfg.explore_pool])
        elif cfg.explore_rate > 0 and cfg.explore_from == "catalog":
            pool = CatalogPool(index, skip | shown)
        elif cfg.explore_rate > 0:
            score = {f.item_id: f.score for f in fused}
            tail = [Fused(i, score.get(i, 0.0), "ann") for i, _ in ann if i not in shown]
            pool = ListPool(tail[: cfg.explore_pool])
        rng = request_rng(cfg.seed, key)
        out.append(epsilon_slots(fused[:k], pool, k, cfg.explore_rate, rng))
    return out


def busy_ranker(seed: int, **overrides: object) -> tuple[Ranker, list[UserState], list[set[str]]]:
    """A ranker after a skewed stream (ties, new items, deletions) and a batch of its users."""
    index = random_index(n_items=150, dim=8, seed=seed)
    config = RankingConfig(**{"pool": 25, **overrides})  # type: ignore[arg-type]
    trained = [f"i{n}" for n in range(140)]  # i140.. are new: vectors from co-visitation
    rec = Ranker(MeanEncoder(dim=8, max_len=6), index, config, trained=trained)
    rng = np.random.default_rng(seed)
    states: dict[str, UserState] = {}
    for n in range(900):
        user = f"u{rng.integers(40)}"
        item = f"i{rng.zipf(1.4) % 170}"  # i150..i169: never in the index
        kind = "purchase" if rng.random() < 0.15 else "click"
        event = make_event(user_id=user, item_id=item, type=kind, ts=1_700_000_000_000 + n // 4)
        rec.observe(event)
        states[user] = apply_event(states.get(user, EMPTY), event, 20)
        if n == 600:
            for gone in ("i1", "i2", "i7", "i141"):
                index.remove(gone)
    users = sorted(states)
    batch = [states[u] for u in users] + [EMPTY, UserState(history=("i155",), n_events=1)]
    exclude = [exclusions(s, exclude_history=n % 3 > 0) for n, s in enumerate(batch)]
    exclude[0] |= {f"i{n}" for n in range(60)}  # a user who excludes more than a pool
    return rec, batch, exclude


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"explore_rate": 0.3, "explore_from": "fused"},
        {"explore_rate": 0.3, "explore_from": "ann", "fusion": "score"},
        {"explore_rate": 0.5, "explore_from": "catalog", "covisit_half_life_s": None},
        {"sources": ("ann",), "explore_rate": 0.2},
        {"sources": ("trending", "covisit"), "k": 12, "explore_rate": 0.2},
        {"sources": ("covisit",), "explore_rate": 0.0, "trending_floor": 0.3},
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recommend_batch_equals_the_per_request_rule(seed: int, overrides: dict) -> None:
    rec, states, exclude = busy_ranker(seed, **overrides)
    k = rec.config.k
    keys = [f"req{n}" for n in range(len(states))]
    got = rec.recommend_batch(states, exclude, k, keys=keys)
    assert got == reference_lists(rec, states, exclude, k, keys)  # exact, floats included
    assert any(len({s.source for s in shown}) > 1 for shown in got) or len(rec.config.sources) == 1
    # any split of the batch gives the same lists (the batch-wide trending head, the beams)
    halves = [
        rec.recommend_batch(states[a:b], exclude[a:b], k, keys=keys[a:b])
        for a, b in ((0, 7), (7, None))
    ]
    assert halves[0] + halves[1] == got


def test_stream_state_sizes_follow_the_bounds() -> None:
    from streamrec.core.events import Event
    from streamrec.ranking.ranker import Ranker, RankingConfig
    from streamrec.testing import MeanEncoder, random_index

    config = RankingConfig(covisit_max_users=2, covisit_window=3, explore_rate=0.0)
    rec = Ranker(MeanEncoder(dim=4), random_index(n_items=10, dim=4, seed=0), config)
    assert rec.stream_state_sizes() == {
        "trending_items": (0, 0),
        "covisit_users": (0, 0),
        "covisit_pairs": (0, 0),
    }
    for n in range(4):
        rec.observe(Event(f"a{n}", f"u{n}", "i1", "click", n))
        rec.observe(Event(f"b{n}", f"u{n}", "i2", "click", n))
    sizes = rec.stream_state_sizes()
    assert sizes["trending_items"] == (2, 0)
    assert sizes["covisit_users"] == (2, 2)
    assert sizes["covisit_pairs"] == (2, 0)  # i1 -> i2 and i2 -> i1
