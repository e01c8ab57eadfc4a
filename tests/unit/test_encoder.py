"""Encoding a batch in buckets of similar history lengths."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamrec.ranking.encoder import encode_bucketed, length_buckets
from streamrec.testing import MeanEncoder


@given(st.lists(st.integers(1, 200), max_size=300))
def test_buckets_cover_every_row_once_in_runs_of_length(lengths: list[int]) -> None:
    buckets = length_buckets(lengths)
    rows = np.concatenate(buckets) if buckets else np.zeros(0, dtype=np.int64)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    spans = [(min(lengths[r] for r in b), max(lengths[r] for r in b)) for b in buckets]
    assert all(hi < lo for (_, hi), (lo, _) in pairwise(spans))


def test_one_run_for_similar_lengths_and_a_split_for_very_different_ones() -> None:
    assert len(length_buckets([20] * 5 + [21] * 5)) == 1
    assert len(length_buckets([3] * 4)) == 1
    split = length_buckets([5] * 100 + [200] * 10)
    assert [len(b) for b in split] == [100, 10]
    # a second run would cost more than the padding it saves
    assert len(length_buckets([50, 52, 53])) == 1
    assert [len(b) for b in length_buckets([5, 6, 200, 200])] == [2, 2]


def test_bucketed_encoding_is_the_batch_encoding_row_by_row() -> None:
    rng = np.random.default_rng(0)
    encoder = MeanEncoder(dim=4, max_len=30)
    histories = [rng.normal(size=(int(n), 4)).astype(np.float32) for n in [1, 80, 3, 2, 60, 5]]
    histories += [rng.normal(size=(2, 4)).astype(np.float32) for _ in range(40)]
    got = encode_bucketed(encoder, histories)
    assert len(length_buckets([min(len(h), 30) for h in histories])) > 1
    np.testing.assert_array_equal(got, encoder.encode(histories))
    np.testing.assert_array_equal(
        encode_bucketed(encoder, histories[:1]), encoder.encode(histories[:1])
    )
