"""The one backoff: waits grow to a cap, a retry is due only once its time has come."""

from __future__ import annotations

import pytest

from streamrec.ops.backoff import Backoff


def test_waits_double_up_to_the_cap_and_reset_starts_over() -> None:
    backoff = Backoff(initial_s=0.5, max_s=3.0)
    waits = [backoff.fail(now=0.0) for _ in range(5)]
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.fail(now=0.0) == 0.5


def test_a_retry_is_due_only_after_its_wait() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0)
    assert not backoff.pending and not backoff.due(now=100.0)
    backoff.fail(now=10.0)
    assert backoff.pending
    assert not backoff.due(now=10.5)
    assert backoff.due(now=11.0)
    backoff.fail(now=11.0)  # the next wait is 2 s
    assert not backoff.due(now=12.5) and backoff.due(now=13.0)
    backoff.reset()
    assert not backoff.pending and not backoff.due(now=1e9)


@pytest.mark.parametrize(
    ("initial", "cap", "factor"), [(0.0, 1.0, 2.0), (2.0, 1.0, 2.0), (1, 2, 0.5)]
)
def test_nonsense_parameters_are_refused(initial: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=initial, max_s=cap, factor=factor)
