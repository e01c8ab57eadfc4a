"""New-item vectors: written to the index within one observe() of co-occurrence evidence, for
items the catalog knows; an item id seen only in events is never written, searched or shown."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from streamrec.core.events import CatalogOp
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.testing import MeanEncoder, make_event, random_index
from streamrec.worker.catalog import apply_catalog_op


def make_ranker(**overrides: object) -> Ranker:
    index = random_index(n_items=50, dim=8, seed=1)
    config = RankingConfig(**{"explore_rate": 0.0, **overrides})  # type: ignore[arg-type]
    trained = [f"i{n}" for n in range(50)]
    return Ranker(MeanEncoder(dim=8), index, config, trained=trained)


def announce(rec: Ranker, item_id: str, vector: tuple[float, ...] | None = None) -> None:
    """The catalog upserts an item: the worker's catalog follower, then the ranker."""
    op = CatalogOp(item_id, "upsert", True, 0, vector)
    apply_catalog_op(rec.index, op)
    rec.observe_catalog(op)


def test_a_new_item_gets_a_vector_on_the_first_co_occurrence() -> None:
    rec = make_ranker()
    announce(rec, "fresh")
    rec.observe(make_event(user_id="u", item_id="i3"))
    np.testing.assert_allclose(rec.index.vectors_of(["fresh"])[0], rec.index.centroid, rtol=1e-6)
    rec.observe(make_event(user_id="u", item_id="fresh"))
    assert rec.index.is_live("fresh")
    expected = rec.index.vectors_of(["i3"])[0]
    np.testing.assert_allclose(rec.index.vectors_of(["fresh"])[0], expected, rtol=1e-5)
    # searchable at once: the nearest item to its own vector is itself or its twin i3
    hits = [i for i, _ in rec.index.search(expected[None, :], 2)[0]]
    assert "fresh" in hits


def test_the_vector_follows_the_weighted_evidence() -> None:
    rec = make_ranker(event_weights={"click": 1.0, "purchase": 3.0})
    announce(rec, "fresh")
    rec.observe(make_event(user_id="u1", item_id="i1", type="purchase"))
    rec.observe(make_event(user_id="u1", item_id="fresh"))
    rec.observe(make_event(user_id="u2", item_id="i2"))
    rec.observe(make_event(user_id="u2", item_id="fresh"))
    v1, v2 = rec.index.vectors_of(["i1", "i2"])
    mean = 3 * v1 + 1 * v2
    want = mean / np.linalg.norm(mean) * (3 * np.linalg.norm(v1) + np.linalg.norm(v2)) / 4
    np.testing.assert_allclose(rec.index.vectors_of(["fresh"])[0], want, rtol=1e-5)
    assert rec.new_items.updates == 2


def test_trained_items_keep_their_vectors_and_switching_off_writes_nothing() -> None:
    rec = make_ranker(new_item_vectors=False)
    before = rec.index.vectors_of(["i1"]).copy()
    rec.observe(make_event(user_id="u", item_id="i1"))
    rec.observe(make_event(user_id="u", item_id="fresh"))
    assert "fresh" not in rec.index
    np.testing.assert_array_equal(rec.index.vectors_of(["i1"]), before)


def test_content_features_blend_in_and_removed_items_stay_removed() -> None:
    rec = make_ranker(content_weight=1.0)
    content = tuple(float(x) for x in np.ones(8))
    rec.index.upsert("fresh", content, available=False)  # the catalog removed it
    rec.observe_catalog(CatalogOp("fresh", "upsert", False, 0, content))
    rec.observe(make_event(user_id="u", item_id="i4"))
    rec.observe(make_event(user_id="u", item_id="fresh"))
    v4 = rec.index.vectors_of(["i4"])[0]
    got = rec.index.vectors_of(["fresh"])[0]
    np.testing.assert_allclose(got, (np.ones(8) + v4) / 2, rtol=1e-5)
    assert not rec.index.is_live("fresh")
    assert rec.new_items.vector_for("nothing") is None
    assert rec.new_items.is_new("fresh") and not rec.new_items.is_new("i4")
    assert got.dtype == np.float32


def test_a_prior_shrinks_vectors_backed_by_little_evidence() -> None:
    rec = make_ranker(new_item_prior=3.0, new_item_refresh_ratio=0.0)
    announce(rec, "fresh")
    rec.observe(make_event(user_id="u", item_id="i3"))
    rec.observe(make_event(user_id="u", item_id="fresh"))  # evidence 1: a quarter of the norm
    v3 = rec.index.vectors_of(["i3"])[0]
    np.testing.assert_allclose(rec.index.vectors_of(["fresh"])[0], v3 / 4, rtol=1e-5)
    for n in range(5):  # evidence 6: two thirds
        rec.observe(make_event(user_id=f"w{n}", item_id="i3"))
        rec.observe(make_event(user_id=f"w{n}", item_id="fresh"))
    np.testing.assert_allclose(rec.index.vectors_of(["fresh"])[0], v3 * 6 / 9, rtol=1e-5)


def test_searchable_counts_new_items_with_a_live_evidence_or_content_vector() -> None:
    rec = make_ranker()
    assert rec.new_items.searchable == 0
    rec.observe(make_event(user_id="u", item_id="i3"))
    rec.observe(make_event(user_id="u", item_id="fresh"))  # evidence, but unknown to the catalog
    assert rec.new_items.searchable == 0
    announce(rec, "fresh")  # the catalog knows it now: its evidence vector is written
    assert rec.new_items.searchable == 1
    content = tuple(float(x) for x in np.ones(8))
    shiny, plain = (
        CatalogOp("shiny", "upsert", True, 0, content),
        CatalogOp("plain", "upsert", True, 0),
    )
    for op in (shiny, plain):
        apply_catalog_op(rec.index, op)  # the worker's catalog follower, then the ranker
        rec.observe_catalog(op)
    assert rec.new_items.searchable == 2  # "shiny" has a content vector, "plain" the centroid
    for op in (CatalogOp("fresh", "delete", False, 1), CatalogOp("shiny", "upsert", False, 1)):
        apply_catalog_op(rec.index, op)
        rec.observe_catalog(op)
    assert rec.new_items.searchable == 0
    back = CatalogOp("fresh", "upsert", True, 2)
    apply_catalog_op(rec.index, back)
    rec.observe_catalog(back)
    assert rec.new_items.searchable == 1
    rec.observe_catalog(CatalogOp("i3", "delete", False, 3))  # trained items never count
    assert rec.new_items.searchable == 1


def _touch(rec: Ranker, n: int) -> list[int]:
    """n events, each pairing the new item with a trained one; the updates after each."""
    if "fresh" not in rec.index:
        announce(rec, "fresh")
    out = []
    for k in range(n):
        rec.observe(make_event(user_id=f"u{k}", item_id=f"i{k % 50}"))
        rec.observe(make_event(user_id=f"u{k}", item_id="fresh"))
        out.append(rec.new_items.updates)
    return out


def test_vectors_are_rewritten_on_a_geometric_schedule() -> None:
    rec = make_ranker(new_item_refresh_ratio=0.1)
    updates = _touch(rec, 300)
    assert updates[:10] == list(range(1, 11)), "early evidence is written at once"
    writes = updates[-1]
    assert 30 < writes < 60, writes  # about 10 + log(300 / 10) / log(1.1), not 300
    stale = rec.index.vectors_of(["fresh"])[0]
    rec.new_items.write_vectors(["fresh"])
    fresh = rec.index.vectors_of(["fresh"])[0]
    cos = float(stale @ fresh / np.linalg.norm(stale) / np.linalg.norm(fresh))
    assert cos > 0.99, "a scheduled vector is close to the up-to-date one"


def test_the_default_schedule_writes_after_half_as_much_evidence_again() -> None:
    updates = _touch(make_ranker(), 300)
    written_at = [n + 1 for n in range(300) if updates[n] > (updates[n - 1] if n else 0)]
    assert written_at[:6] == [1, 2, 3, 5, 8, 12]
    assert len(written_at) < 16


def test_a_zero_refresh_ratio_rewrites_after_every_event() -> None:
    rec = make_ranker()
    rec.new_items.refresh_ratio = 0.0
    assert _touch(rec, 30) == list(range(1, 31))


# -- items seen only in events ------------------------------------------------------------------


def _lists(rec: Ranker, history: tuple[str, ...]) -> list[str]:
    from streamrec.core.history import UserState

    state = UserState(history=history, n_events=len(history), last_ts=10_000)
    shown = rec.recommend_batch([state, UserState()], [set(history), set()], k=10)
    return [s.item_id for lst in shown for s in lst]


def test_an_item_seen_only_in_events_is_never_recommended_until_the_catalog_knows_it() -> None:
    rec = make_ranker(explore_rate=0.5, explore_from="catalog")  # exploration draws too
    for n in range(40):  # "junk" is by far the most trending item, and i1's co-visitor
        rec.observe(make_event(event_id=f"a{n}", user_id=f"u{n}", item_id="i1", ts=1000 + n))
        junk = make_event(event_id=f"b{n}", user_id=f"u{n}", item_id="junk", ts=1000 + n)
        rec.observe(replace(junk, type="purchase"))
    assert rec.trending.top(1)[0][0] == "junk"
    assert "junk" in rec.covisit.neighbors("i1")
    assert "junk" not in rec.index and rec.new_items.updates == 0
    assert rec.new_items.searchable == 0
    for _ in range(5):  # several exploration draws
        assert "junk" not in _lists(rec, ("i1",)), "not via trending, co-visitation or the index"
    announce(rec, "junk")  # the catalog announces it: recommendable at once, with its evidence
    assert rec.new_items.updates == 1 and rec.new_items.searchable == 1
    np.testing.assert_allclose(
        rec.index.vectors_of(["junk"])[0], rec.index.vectors_of(["i1"])[0], rtol=1e-5
    )
    assert "junk" in _lists(rec, ("i1",))


def test_event_only_items_keep_no_per_item_vector_state() -> None:
    rec = make_ranker()
    for n in range(100):
        rec.observe(make_event(event_id=f"a{n}", user_id="u", item_id="i1", ts=n))
        rec.observe(make_event(event_id=f"b{n}", user_id="u", item_id=f"junk{n}", ts=n))
    assert rec.new_items._touches == {} and rec.new_items._written_at == {}
    assert rec.index.n_labels == 50


def test_a_content_vector_is_read_from_the_index_until_evidence_overwrites_it() -> None:
    rec = make_ranker(content_weight=1.0)
    content = np.linspace(-1, 1, 8).astype(np.float32)
    announce(rec, "fresh", tuple(content.tolist()))
    new_items = rec.new_items
    assert new_items._content == {}  # no copy while the index holds the catalog's vector
    np.testing.assert_array_equal(new_items.content_of("fresh"), content)
    rec.observe(make_event(user_id="u", item_id="i3"))
    rec.observe(make_event(user_id="u", item_id="fresh"))  # evidence: the index vector moves
    assert not np.array_equal(rec.index.vectors_of(["fresh"])[0], content)
    np.testing.assert_array_equal(new_items.content_of("fresh"), content)  # kept aside first
    # the blend still starts from the catalog's content, not from the evidence vector
    i3 = rec.index.vectors_of(["i3"])[0]
    want = (content + i3) / 2
    np.testing.assert_allclose(rec.index.vectors_of(["fresh"])[0], want, rtol=1e-5)
    # a new catalog vector replaces the content (and, with evidence, is blended at once)
    announce(rec, "fresh", tuple(float(x) for x in np.ones(8)))
    np.testing.assert_array_equal(new_items.content_of("fresh"), np.ones(8, np.float32))
    np.testing.assert_allclose(rec.index.vectors_of(["fresh"])[0], (1 + i3) / 2, rtol=1e-5)
    # without evidence, the index holds the catalog's vector: no copy
    announce(rec, "quiet", tuple(float(x) for x in np.ones(8)))
    assert "quiet" not in new_items._content
    np.testing.assert_array_equal(new_items.content_of("quiet"), np.ones(8, np.float32))


def test_saved_content_round_trips_through_load_state() -> None:
    rec = make_ranker(content_weight=1.0)
    kept = np.linspace(-1, 1, 8).astype(np.float32)
    announce(rec, "moved", tuple(kept.tolist()))
    announce(rec, "still", tuple(float(x) for x in np.ones(8)))
    rec.observe(make_event(user_id="u", item_id="i3"))
    rec.observe(make_event(user_id="u", item_id="moved"))
    content, vectored = rec.new_items.saved_state()
    assert sorted(content) == ["moved", "still"] and len(content) == 2
    np.testing.assert_array_equal(content["moved"], kept)
    np.testing.assert_array_equal(content["still"], np.ones(8, np.float32))
    again = make_ranker(content_weight=1.0)
    again.index.replace_with(rec.index)
    again.new_items.load_state(dict(content), vectored)
    assert list(again.new_items._content) == ["moved"]  # "still" is read from the index
    for item_id in ("moved", "still"):
        np.testing.assert_array_equal(again.new_items.content_of(item_id), content[item_id])


# -- batches and restarts -----------------------------------------------------------------------


def _pair_events(n: int) -> list:
    """n users, each clicking a trained item then one of two new items."""
    out = []
    for k in range(n):
        out.append(make_event(user_id=f"u{k}", item_id=f"i{k % 50}", ts=1000 + 2 * k))
        out.append(make_event(user_id=f"u{k}", item_id=f"new{k % 2}", ts=1001 + 2 * k))
    return out


def test_a_batch_writes_each_due_vector_once_and_ends_with_the_same_vectors() -> None:
    # every touch due (ratio 0): one observe per event writes the last vector last too
    one, batched = (make_ranker(new_item_refresh_ratio=0.0) for _ in range(2))
    for rec in (one, batched):
        announce(rec, "new0")
        announce(rec, "new1")
    events = _pair_events(40)
    for offset, event in enumerate(events):
        one.observe(event, 0, offset)
    assert batched.observe_batch([(e, 0, o) for o, e in enumerate(events)]) == len(events)
    np.testing.assert_allclose(
        batched.index.vectors_of(["new0", "new1"]), one.index.vectors_of(["new0", "new1"])
    )
    assert batched.new_items.updates == 2 < one.new_items.updates
    # the batch's offsets count as observed: a re-read batch changes nothing
    assert batched.observe_batch([(e, 0, o) for o, e in enumerate(events)]) == 0


def test_deferred_vectors_are_written_by_write_deferred_and_equal_the_batch_write() -> None:
    now, deferred = (make_ranker(new_item_refresh_ratio=0.0) for _ in range(2))
    for rec in (now, deferred):
        announce(rec, "new0")
        announce(rec, "new1")
    events = [(e, 0, o) for o, e in enumerate(_pair_events(40))]
    before = deferred.index.vectors_of(["new0", "new1"])
    now.observe_batch(events)
    deferred.observe_batch(events, defer=True)
    # nothing written yet: a batch ranked now sees the vectors of the batches before it
    np.testing.assert_array_equal(deferred.index.vectors_of(["new0", "new1"]), before)
    assert deferred.new_items.updates == 0
    assert sorted(deferred.new_items.write_deferred(background=True)) == ["new0", "new1"]
    np.testing.assert_allclose(
        deferred.index.vectors_of(["new0", "new1"]), now.index.vectors_of(["new0", "new1"])
    )
    query = now.index.vectors_of(["new0"])[0]
    assert deferred.index.search(query, 3) == now.index.search(query, 3)  # the graph too
    assert deferred.new_items.write_deferred() == []  # each deferred item is written once


def test_a_restore_continues_the_refresh_schedule_instead_of_restarting_it() -> None:
    live, restarted = make_ranker(), make_ranker()
    for rec in (live, restarted):
        announce(rec, "new0")
        announce(rec, "new1")
    events = _pair_events(200)
    for offset, event in enumerate(events):
        live.observe(event, 0, offset)
    restarted.restore(0, list(enumerate(events)))
    live.new_items.write_vectors(["new0"])  # the up-to-date vector (the schedule lags)
    np.testing.assert_allclose(
        restarted.index.vectors_of(["new0"]), live.index.vectors_of(["new0"]), rtol=1e-5
    )
    # one more event each: 100 touches counted, so neither is due (before the fix, a restore
    # left the counts at zero and every touch after a restart rewrote the vector)
    more = [make_event(user_id="v", item_id="i7", ts=9000), make_event(user_id="v", item_id="new0")]
    for rec in (live, restarted):
        before = rec.new_items.updates
        rec.observe_batch([(e, 0, 400 + o) for o, e in enumerate(more)])
        assert rec.new_items.updates == before
