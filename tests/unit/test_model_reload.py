"""Loading versions from a repository, refusing broken ones, re-embedding and swapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import item_vectors, mean_encoder_onnx, publish_tiny, write_tiny_model

from streamrec.core.events import Event
from streamrec.io.codec import encode_event
from streamrec.ops.metrics import Metrics
from streamrec.ops.settings import Settings, load_settings
from streamrec.ranking.index import ItemIndex
from streamrec.ranking.modelfiles import VECTORS_FILE, read_model_dir
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.ranking.reembed import catch_up, reembed, snapshot
from streamrec.ranking.repository import version_path
from streamrec.testing import FakeClock, MemoryStateReader
from streamrec.worker.reload import ModelReloader, open_model, swap_model
from streamrec.worker.serving import RefusedModelError, prepare_version
from streamrec.worker.step import Pipeline, Record


def _settings(model_dir: Path, **overrides: Any) -> Settings:
    return load_settings(model_dir=model_dir, metrics_port=0, db_url="sqlite://", **overrides)


def _failures(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "streamrec_model_reload_failures_total", {"reason": reason}
    )
    return value or 0.0


def _broken(kind: str) -> dict[str, Any]:
    if kind == "bad onnx":
        return {"onnx_bytes": b"not an onnx graph"}
    if kind == "nan encoder":
        return {"onnx_bytes": mean_encoder_onnx(nan=True)}
    if kind == "encoder of another dimension":
        return {"onnx_bytes": mean_encoder_onnx(declared_dim=4)}
    return {"vectors": np.full((30, 8), np.nan, np.float32)}


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("bad onnx", "load"),
        ("nan encoder", "nan"),
        ("encoder of another dimension", "dimension"),
        ("nan vectors", "nan"),
    ],
)
def test_a_broken_version_is_refused_with_its_reason(
    tmp_path: Path, kind: str, reason: str
) -> None:
    number, _ = publish_tiny(tmp_path / "repo", **_broken(kind))
    settings = _settings(tmp_path / "repo")
    with pytest.raises(RefusedModelError) as refused:
        prepare_version(settings, version_path(tmp_path / "repo", number), number)
    assert refused.value.reason == reason


def test_a_checksum_mismatch_or_another_dimension_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    number, _ = publish_tiny(repo)
    settings = _settings(repo)
    assert prepare_version(settings, version_path(repo, number), number, dim=8).number == 1
    with pytest.raises(RefusedModelError) as other_dim:
        prepare_version(settings, version_path(repo, number), number, dim=16)
    assert other_dim.value.reason == "dimension"
    vectors = version_path(repo, number) / VECTORS_FILE
    vectors.write_bytes(vectors.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(RefusedModelError) as mismatch:
        prepare_version(settings, version_path(repo, number), number)
    assert mismatch.value.reason == "checksum"


def test_start_serves_the_highest_version_that_loads(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish_tiny(repo, seed=1)
    publish_tiny(repo, onnx_bytes=b"garbage")
    metrics = Metrics()
    model, reloader = open_model(_settings(repo), metrics)
    assert model.number == 1
    assert reloader is not None and reloader.refused == {2}
    assert _failures(metrics, "load") == 1
    info = metrics.registry.get_sample_value(
        "streamrec_model_info",
        {
            "version": model.files.meta.version,
            "repository_version": "1",
            "dim": "8",
            "max_len": "10",
        },
    )
    assert info == 1


def test_a_single_directory_is_served_without_a_reloader(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "m")
    model, reloader = open_model(_settings(tmp_path / "m"), Metrics())
    assert model.number is None and reloader is None
    no_poll = _settings(tmp_path / "repo", model_poll_interval_s=0)
    publish_tiny(tmp_path / "repo")
    assert open_model(no_poll, Metrics())[1] is None


def test_reembed_keeps_catalog_items_at_the_prior_and_catches_up(tmp_path: Path) -> None:
    old_vectors = item_vectors(30, 8, seed=1)
    served = ItemIndex([f"i{i}" for i in range(30)], old_vectors)
    served.upsert("c1", [1.0] * 8, True)  # a catalog-supplied vector (old space)
    served.upsert("c2", None, True)
    served.remove("i3")
    taken = snapshot(served)
    served.upsert("c3", [0.5] * 8, True)  # during the build
    served.remove("i4")
    served.remove("c1")
    served.upsert("i3", None, True)
    new_ids = [f"i{i}" for i in range(25)] + ["c2"]  # the new model knows c2, forgot i25..
    new_vectors = item_vectors(26, 8, seed=2)
    index = reembed(new_ids, new_vectors, taken)
    assert not index.is_live("i3") and index.is_live("c1")  # as at the snapshot
    assert catch_up(index, served, taken, limit=3) == (3, 1)  # the three flips first
    served.upsert("c4", None, False)  # meanwhile
    assert catch_up(index, served, taken, limit=3) == (2, 0)
    assert catch_up(index, served, taken) == (0, 0)
    assert taken.ids == served.ids_of(range(served.n_labels))
    prior = new_vectors.mean(axis=0)
    np.testing.assert_allclose(index.centroid, prior, rtol=1e-6)
    assert index.is_live("i3") and not index.is_live("i4") and not index.is_live("c1")
    assert index.is_live("c3") and index.is_live("i27") and not index.is_live("c4")
    np.testing.assert_array_equal(index.vectors_of(["i0", "c2"]), new_vectors[[0, 25]])
    for carried in ("c1", "c3", "c4", "i27"):  # old-space vectors dropped to the new prior
        np.testing.assert_allclose(index.vectors_of([carried])[0], prior, rtol=1e-6)
    assert index.size == served.size


def _record(offset: int, event_id: str, user: str, item: str) -> Record:
    event = Event(event_id, user, item, "click", 1_700_000_000_000 + offset)
    return Record("streamrec.events", 0, offset, user.encode(), encode_event(event), 0)


def test_poll_prepares_a_new_version_and_the_swap_switches_the_pipeline(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish_tiny(repo, seed=1)
    settings = _settings(
        repo, model_poll_interval_s=10, top_k=5, explore_rate=0.0, catalog_batch_max_records=1
    )
    metrics = Metrics()
    clock = FakeClock(0.0)
    served, _ = open_model(settings, metrics)
    reloader = ModelReloader(settings, metrics, served.number or 0, clock=clock)
    ranker = Ranker(
        served.encoder,
        served.index,
        RankingConfig.from_settings(settings),
        trained=served.files.item_ids,
    )
    pipeline = Pipeline(
        settings, served.encoder, served.index, served.files.meta.version, ranker=ranker
    )
    store = MemoryStateReader()
    write, _ = pipeline.process([_record(0, "e0", "u1", "i1")], store, {0: 1})
    assert served.files.meta.version.encode() in write.messages[0].value

    _, meta2 = publish_tiny(repo, seed=2)
    assert reloader.poll(served) is None, "not due before the poll interval"
    clock.advance(10)
    assert reloader.poll(served) is None  # started on a background thread
    served.index.upsert("c9", None, True)  # catalog changes while it is prepared
    served.index.remove("i5")
    reloader.wait()
    assert reloader.poll(served) is None, "one catalog change caught up per iteration"
    prepared = reloader.poll(served)
    assert prepared is not None and prepared.model.number == 2 and prepared.caught_up == 2
    model = swap_model(prepared, served, pipeline, None, None)
    reloader.swapped(2)
    assert pipeline.model_version == meta2.version and pipeline.index is model.index
    assert model.index.is_live("c9") and not model.index.is_live("i5")
    new_ranker = pipeline.ranker
    assert new_ranker is not None and new_ranker is not ranker
    assert new_ranker.trending is ranker.trending and new_ranker.covisit is ranker.covisit
    assert new_ranker.next_offset(0) == 1, "offsets counted before the swap stay counted"
    write, _ = pipeline.process([_record(1, "e1", "u1", "i2")], store, {0: 1})
    assert meta2.version.encode() in write.messages[0].value

    publish_tiny(repo, onnx_bytes=b"corrupt")  # version 3
    clock.advance(10)
    assert reloader.poll(model) is None
    reloader.wait()
    assert reloader.poll(model) is None, "a broken version is never swapped in"
    assert reloader.refused == {3} and _failures(metrics, "load") == 1
    clock.advance(10)
    assert reloader.poll(model) is None and reloader.wait() is None
    assert _failures(metrics, "load") == 1, "a refused version is not tried again"
    assert read_model_dir(version_path(repo, 2)).meta.version == pipeline.model_version


def test_encoder_only_ranking_swaps_too(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish_tiny(repo, n_items=20, seed=1)
    settings = _settings(repo, ranking="encoder", model_poll_interval_s=1, top_k=3)
    clock = FakeClock(0.0)
    served, _ = open_model(settings, Metrics())
    ids = served.files.item_ids
    pipeline = Pipeline(
        settings, served.encoder, served.index, served.files.meta.version, trained=ids
    )
    publish_tiny(repo, n_items=25, seed=2)  # five more items
    reloader = ModelReloader(settings, Metrics(), 1, clock=clock)
    clock.advance(1)
    reloader.poll(served)
    reloader.wait()
    prepared = reloader.poll(served)
    assert prepared is not None
    model = swap_model(prepared, served, pipeline, None, None)
    assert pipeline.ranker is None and pipeline.index is model.index
    write, stats = pipeline.process([_record(0, "e0", "u1", "i1")], MemoryStateReader(), {0: 1})
    assert model.files.meta.version.encode() in write.messages[0].value
    assert stats.slots[("encoder", "trained")] == 3, "the new model's items count as trained"


PINNED = '[{"name": "A", "model_version": %d}, {"name": "B", "model_version": %d}]'


def test_arms_that_name_a_model_version_are_served_that_version_and_never_another(
    tmp_path: Path,
) -> None:
    from streamrec.errors import ConfigError, ModelError

    repo = tmp_path / "repo"
    publish_tiny(repo, seed=1)
    publish_tiny(repo, seed=2)
    publish_tiny(repo, onnx_bytes=b"garbage")
    model, reloader = open_model(_settings(repo, ab_arms=PINNED % (1, 1)), Metrics())
    assert model.number == 1  # not the newest complete one (2)
    assert reloader is None  # and newer versions are not followed
    metrics = Metrics()
    with pytest.raises(ModelError, match="model_version 3, which is refused"):
        open_model(_settings(repo, ab_arms=PINNED % (3, 3)), metrics)
    assert _failures(metrics, "load") == 1
    with pytest.raises(ModelError, match="not a complete version"):
        open_model(_settings(repo, ab_arms=PINNED % (7, 7)), Metrics())
    write_tiny_model(tmp_path / "single")
    with pytest.raises(ConfigError, match="not a repository"):
        open_model(_settings(tmp_path / "single", ab_arms=PINNED % (1, 1)), Metrics())
