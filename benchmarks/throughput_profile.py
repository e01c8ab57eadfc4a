"""Where the in-process drain's time goes, from ``cProfile``: for ``throughput.py``'s report.

The in-process point at the main run's catalog size runs its back-to-back drain under
``cProfile`` once more (after the timed drain, on fresh events); each row below is the
cumulative time of the named functions (they do not nest into each other), "other" is the
rest of the drain's time. Not a script: ``throughput_inprocess.py`` imports it.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from typing import Any

_ORT = "<built-in method onnxruntime.capi.onnxruntime_pybind11_state.run>"
# (row, (file suffix, function name) whose cumulative time it is); the functions do not nest
GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "HNSW writes on the loop's thread (add_items)",
        (("~", "<built-in method hnswlib.add_items>"),),
    ),
    (
        "waiting for the background HNSW writes of new-item vectors (ItemIndex.wait_writes)",
        (("index.py", "wait_writes"),),
    ),
    (
        "new-item evidence vectors computed (coldstart.vector_for)",
        (("coldstart.py", "vector_for"),),
    ),
    ("trending + co-visitation counting (Ranker._count)", (("ranker.py", "_count"),)),
    ("ANN search (hnswlib knn_query)", (("~", "<built-in method hnswlib.knn_query>"),)),
    ("encoder (onnxruntime run)", (("~", _ORT),)),
    ("co-visitation candidates (Ranker._covisit_arrays)", (("ranker.py", "_covisit_arrays"),)),
    ("fusion (fuse_arrays)", (("fusion.py", "fuse_arrays"),)),
    ("exploration slots (epsilon_slots)", (("explore.py", "epsilon_slots"),)),
    ("reasons (Ranker._with_reasons)", (("ranker.py", "_with_reasons"),)),
    ("state transaction (Store.commit_batch)", (("store.py", "commit_batch"),)),
    ("dedupe read + users loaded (Store)", (("store.py", "applied"), ("store.py", "load_users"))),
    ("output records encoded (encode_recommendation)", (("codec.py", "encode_recommendation"),)),
)


def profiled(run: Callable[[], None]) -> dict[str, Any]:
    """Run ``run`` under cProfile; the seconds per group (``GROUPS``) and in all."""
    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items())
    rows: dict[str, float] = {}
    for name, keys in GROUPS:
        seconds = 0.0
        for (path, _, func), (_, _, _, cum, _) in stats.items():
            if any(path.endswith(suffix) and func == f for suffix, f in keys):
                seconds += cum
        rows[name] = seconds
    rows["other (Python glue of the batch and the lists)"] = max(0.0, total - sum(rows.values()))
    return {"total_s": total, "groups": rows}
