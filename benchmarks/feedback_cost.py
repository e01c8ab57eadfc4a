"""What feedback and reasons cost the batch step: ``Pipeline.process`` timed per batch.

Fused ranking with the product's defaults (exploration 3 % from the catalog), a random index
of ``--items`` unit vectors (dim 32) and the mean-of-history encoder (``streamrec.testing``):
no ONNX, so the step's own costs weigh more than in the worker and the relative overheads
below are upper bounds. Simulated traffic (``streamrec.io.simulate``); the first
``--warm`` events are observed to fill trending and co-visitation. Configurations, measured
interleaved batch by batch on the same events:

* ``baseline``: ``STREAMREC_OUTPUT_REASONS=false``, users without feedback;
* ``reasons``: reasons on (the default);
* ``feedback``: reasons on, and every user in the batch has 5 dismissed items and 40 items
  shown without a click, 30 of them past the demotion threshold (a heavy case).

Prints the median and p90 seconds per batch and the output bytes per recommendation.
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/feedback_cost.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from streamrec.core.history import UserState
from streamrec.io.codec import encode_event
from streamrec.io.simulate import SimConfig, Simulator
from streamrec.ops.settings import load_settings
from streamrec.ranking.ranker import Ranker, RankingConfig
from streamrec.state.memory import MemoryStateReader
from streamrec.testing import FakeClock, MeanEncoder, random_index
from streamrec.worker.step import Pipeline, Record

CONFIGS = ("baseline", "reasons", "feedback")


def _pipeline(items: int, reasons: bool) -> Pipeline:
    settings = load_settings(metrics_port=0, db_url="sqlite://", output_reasons=reasons)
    encoder, index = MeanEncoder(32, max_len=50), random_index(items, 32, seed=0)
    index_ids = [f"i{n}" for n in range(items)]
    ranker = Ranker(encoder, index, RankingConfig.from_settings(settings), trained=index_ids)
    return Pipeline(settings, encoder, index, "v", FakeClock(), ranker=ranker)


def _feedback(user: int, items: int) -> UserState:
    shown = tuple((f"i{(user * 7 + n) % items}", 1 + (n % 4) * 2) for n in range(40))
    dismissed = tuple(f"i{(user * 13 + n) % items}" for n in range(5))
    return UserState(dismissed=dismissed, impressions=shown)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--warm", type=int, default=20000)
    args = parser.parse_args(argv)
    sim = Simulator(SimConfig(users=5000, items=args.items, seed=1))
    total = args.warm + args.batches * args.batch
    events = list(sim.events(total))  # item ids i0.. are the index's
    pipes = {name: _pipeline(args.items, name != "baseline") for name in CONFIGS}
    for pipe in pipes.values():
        assert pipe.ranker is not None
        for e in events[: args.warm]:
            pipe.ranker.observe(e)
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    sizes: dict[str, list[int]] = {name: [] for name in CONFIGS}
    for b in range(args.batches):
        batch = events[args.warm + b * args.batch : args.warm + (b + 1) * args.batch]
        records = [
            Record("t", 0, n, e.user_id.encode(), encode_event(e), 0) for n, e in enumerate(batch)
        ]
        for name in CONFIGS:
            reader = MemoryStateReader()
            if name == "feedback":
                users = {e.user_id for e in batch}
                reader.users = {u: _feedback(hash(u) % 1000, args.items) for u in users}
            start = time.perf_counter()
            write, _ = pipes[name].process(records, reader, {0: 1})
            times[name].append(time.perf_counter() - start)
            sizes[name].extend(len(m.value or b"") for m in write.messages)
    report = {}
    for name in CONFIGS:
        t = sorted(times[name])
        report[name] = {
            "median_s": statistics.median(t),
            "p90_s": t[int(0.9 * (len(t) - 1))],
            "bytes_per_rec": statistics.mean(sizes[name]),
        }
        print(
            f"{name:9s} median {report[name]['median_s'] * 1000:7.1f} ms/batch  "
            f"p90 {report[name]['p90_s'] * 1000:7.1f} ms  "
            f"{report[name]['bytes_per_rec']:6.0f} B/rec"
        )
    return report


if __name__ == "__main__":
    main()
