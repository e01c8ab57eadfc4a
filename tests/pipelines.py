"""A batch step over fakes for unit tests: a ``Pipeline`` on ``MeanEncoder`` and
``random_index``, and events run through it as input records."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from streamrec.core.events import Event
from streamrec.io.codec import encode_event
from streamrec.ops.settings import Settings, load_settings
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.memory import MemoryStateReader
from streamrec.testing import FakeClock, MeanEncoder, random_index
from streamrec.worker.step import BatchStats, Pipeline, Record


def make_pipeline(
    k: int,
    n_items: int,
    index_seed: int,
    config: RankingConfig | Callable[[Settings], RankingConfig] | None,
    version: str = "v",
    dim: int = 8,
    **overrides: Any,
) -> Pipeline:
    """Settings (``top_k`` = ``k``, in-memory SQLite, no metrics port, ``overrides``), a
    ``MeanEncoder`` and a ``random_index`` of ``i0..i{n_items-1}``; with ``config`` (or a
    function of the settings that makes it), a fused ``Ranker`` trained on every item (None:
    encoder and index alone)."""
    settings = load_settings(metrics_port=0, top_k=k, db_url="sqlite://", **overrides)
    encoder, index = MeanEncoder(dim, max_len=20), random_index(n_items, dim, seed=index_seed)
    ranker = None
    if config is not None:
        if callable(config):
            config = config(settings)
        ranker = Ranker(encoder, index, config, trained=[f"i{n}" for n in range(n_items)])
    return Pipeline(settings, encoder, index, version, FakeClock(), ranker=ranker)


def run_events(
    pipe: Pipeline, events: Sequence[Event], reader: MemoryStateReader | None = None
) -> tuple[list[dict[str, Any]], BatchStats]:
    """``events`` as one batch of partition 0 (offsets 0..), generation 1: the published
    messages decoded, and the batch's stats."""
    records = [
        Record("t", 0, n, e.user_id.encode(), encode_event(e), 0) for n, e in enumerate(events)
    ]
    write, stats = pipe.process(records, reader or MemoryStateReader(), {0: 1})
    return [json.loads(m.value) for m in write.messages], stats  # type: ignore[arg-type]
