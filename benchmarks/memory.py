"""Worker memory at 1,000,000 catalog items x d = 64: the goal is RSS <= 1 GiB (issue 15).

One run writes ``benchmarks/MEMORY.md`` (and re-assembles BENCHMARKS.md):

* trains a small d = 64 model (unless ``--model``), makes ``--items`` catalog items with
  vectors (``throughput_workload.make_catalog``) and writes the index snapshot a worker that
  read that catalog would write (``soak.seed_snapshot``: the graph, vectors, ids and the
  catalog's content vectors of new items);
* in a fresh child process, loads what the worker loads at start, the way it does
  (``load_serving_model`` with ``load_at_start``, ``make_ranker``, then
  ``release_free_memory``), and reports its RSS
  after each step, its peak (VmHWM), and where the memory goes: hnswlib's graph (its own
  formula: ``max_elements`` x (links + vector + label) plus a lock per element), the index's
  vector array, the id list and id -> label map, the ranker's content vectors.

The steady state under traffic (co-visitation, trending, sessions) is what ``make soak``
samples; its RSS is in RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import HERE, machine, model_or_small, publish, run_lines, say, table_head

GOAL_BYTES = 1 << 30
MIB = 1 << 20


def rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out["VmRSS"], out["VmHWM"]


def _deep_str_bytes(items: Any) -> int:
    return sum(sys.getsizeof(s) for s in items)


def child(model_dir: str, snaps: str) -> dict[str, Any]:
    """Load the worker's model, index (from the snapshot) and ranker; RSS at each step."""
    steps = {"python and numpy": rss()[0]}
    from streamrec.ops.metrics import Metrics
    from streamrec.ops.settings import load_settings
    from streamrec.worker import loop  # noqa: F401 (the worker's imports: kafka, sqlalchemy)
    from streamrec.worker.serving import load_serving_model, make_ranker
    from streamrec.worker.snapshots import load_at_start

    steps["worker modules imported"] = rss()[0]
    settings = load_settings(model_dir=Path(model_dir), index_snapshot_dir=Path(snaps))
    metrics = Metrics()
    start = time.perf_counter()
    model = load_serving_model(settings, snapshot=lambda f: load_at_start(settings, f, metrics))
    load_s = time.perf_counter() - start
    assert model.snapshot is not None, "the snapshot was not loaded"
    steps["model, encoder and index loaded"] = rss()[0]
    ranker = make_ranker(settings, model)
    steps["ranker (content vectors of new items)"] = rss()[0]
    from streamrec.ops.memory import release_free_memory

    release_free_memory()  # as ``Worker.__init__`` does next
    steps["freed heap returned to the OS (malloc_trim, as the worker does)"] = rss()[0]
    index, graph = model.index, model.index._graph
    n_graph = graph.get_max_elements()
    # hnswlib: level-0 block per element = links (4 + 4 M0) + vector (4 d) + label (8);
    # a std::mutex (40 bytes) and a pointer per element; upper levels (~1/M of elements)
    m0 = 2 * graph.M
    per = 4 + 4 * m0 + 4 * index.dim + 8
    parts = {
        "hnswlib graph (level 0, locks, upper levels ~)": n_graph * (per + 48)
        + int(n_graph / graph.M) * (4 + 4 * graph.M),
        "index vectors (float32 copy)": index._vectors.nbytes,
        "id list and id -> label map": sys.getsizeof(index._ids)
        + _deep_str_bytes(index._ids)
        + sys.getsizeof(index._label)
        + 28 * len(index._label),
    }
    if ranker is not None:
        new_items = ranker.new_items
        content = new_items._content
        parts["content vectors of new items (dict of arrays)"] = sys.getsizeof(content) + sum(
            v.nbytes + 112 for v in content.values()
        )
        parts["new items' flags (vectored, searchable, content in the index)"] = (
            new_items._flags.bits.nbytes
        )
    now, peak = rss()
    parts["the rest (Python, libraries, encoder, allocator)"] = now - sum(parts.values())
    return {
        "steps": steps,
        "parts": parts,
        "rss": now,
        "hwm": peak,
        "load_s": load_s,
        "live": index.size,
        "graph_max_elements": n_graph,
        "dim": index.dim,
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Seed the snapshot here, measure in a child process."""
    from soak import seed_snapshot
    from throughput_workload import make_catalog

    from streamrec.ops.settings import load_settings
    from streamrec.ranking.modelfiles import read_model_dir

    model_dir = model_or_small(args.model, args.dim, tmp)
    files = read_model_dir(model_dir)
    snaps = Path(args.snapshot_dir) if args.snapshot_dir else tmp / "snaps"
    if not args.snapshot_dir:
        settings = load_settings(model_dir=model_dir, index_snapshot_dir=snaps)
        catalog = make_catalog(files.item_ids, files.item_vectors, args.items, seed=0)
        say(f"seeding a snapshot of {len(catalog):,} items (bulk build)")
        seed_snapshot(settings, files, catalog, {"0": 0})
        del catalog
    say("loading it in a child process")
    cmd = [sys.executable, __file__, "--child", str(model_dir), str(snaps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def write_markdown(r: dict[str, Any], path: Path) -> Path:
    """The report section (``MEMORY.md``)."""
    ok = r["rss"] <= GOAL_BYTES
    lines = [
        "# Worker memory at 1,000,000 items x d = 64 (issue 15)",
        "",
        *run_lines(machine(), "python"),
        f"- {r['live']:,} live items, d = {r['dim']}, loaded from an index snapshot in "
        f"{r['load_s']:.1f} s (as a restarted worker does), in a fresh process",
        "",
        f"**RSS {r['rss'] / MIB:,.0f} MiB (goal ≤ 1,024 MiB: {'met' if ok else 'NOT met'}), "
        f"peak {r['hwm'] / MIB:,.0f} MiB.** No traffic yet: co-visitation, trending and "
        "sessions add to it under load (bounded by their settings; `make soak` samples the "
        "worker's RSS under churn, RELIABILITY.md).",
        "",
        *table_head(["after", "RSS"], "lr"),
        *[f"| {k} | {v / MIB:,.0f} MiB |" for k, v in r["steps"].items()],
        "",
        *table_head(["where it goes (computed)", "bytes"], "lr"),
        *[f"| {k} | {v / MIB:,.0f} MiB |" for k, v in r["parts"].items()],
        "",
        f"The graph holds {r['graph_max_elements']:,} slots. The index keeps its own float32 "
        "copy of every vector beside hnswlib's (vectors of deleted items, whose graph places "
        "new items take or a compaction removes, are still read for histories): reading live "
        "vectors from the graph instead is the largest reduction left.",
    ]
    return publish(path, "\n".join(lines) + "\n")


def main() -> None:
    """Parse the flags, run, write MEMORY.md and re-assemble BENCHMARKS.md."""
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model directory (default: train a small one)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument(
        "--snapshot-dir", help="load this snapshot directory (of --model) instead of seeding one"
    )
    parser.add_argument("--out", default=str(HERE / "MEMORY.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamrec-memory-") as tmp:
        report = run(args, Path(tmp))
    print(report)
    write_markdown(report, Path(args.out))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
