"""Assemble BENCHMARKS.md from the section files the benchmark scripts write.

Each script writes its own section (``benchmarks/QUALITY.md``, ``THROUGHPUT.md``,
``REPLAY.md``, ``NEW_ITEMS.md``) with its command, machine and date, and then calls
``assemble()`` so that BENCHMARKS.md at the top of the repository always holds every latest
result.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTIONS = (
    ("QUALITY.md", "Model quality (issue 4): offline leave-one-out on ML-100k"),
    ("THROUGHPUT.md", "Worker throughput, latency and cost curves (issue 13)"),
    ("REFRESH.md", "New-item refresh ratio: HNSW rewrites against replay quality (issue 13)"),
    ("TUNING.md", "Ranking defaults chosen on a validation window (issue 7)"),
    ("REPLAY.md", "Streaming replay: cold start, fusion, exploration (issue 7)"),
    ("NEW_ITEMS.md", "New items through the worker: evidence to recommendable"),
    ("IMPRESSIONS.md", "Impression demotion in the streaming replay (issue 17)"),
    ("ARMS.md", "A/B arms side by side and off-policy estimates checked (issue 17)"),
    ("SNAPSHOT.md", "Index snapshots: restart to ready at 100,000 items (issue 15)"),
    ("TRAINING.md", "Training at catalog scale (issue 18)"),
    ("MEMORY.md", "Worker memory at 1,000,000 items x d = 64 (issue 15)"),
    ("SCALEOUT.md", "Scale-out: 1, 2 and 4 workers with global signals (issue 16)"),
    ("SCALEOUT_KAFKA.md", "Scale-out through Kafka: 1, 2 and 4 real workers (issue 16)"),
)
HEADER = """# Benchmarks

Speed, memory and quality goals live here, never in timed unit tests. Every section below is
written by its script (command, machine, date and settings inside); re-run one and it
re-assembles this file. Machines here are small and shared (2 cores): read every figure with
the load noted in its section, and prefer the ratios measured within one run.

| section | script | make target |
|---|---|---|
| model quality | `benchmarks/quality.py` | `make quality` |
| worker throughput, latency, stages, cost curves | `benchmarks/throughput.py` | `make bench` |
| new-item refresh ratio: rewrites vs quality | `benchmarks/refresh_ratio.py` | - |
| ranking defaults (validation window) | `benchmarks/tune.py` | `make tune` |
| streaming replay | `benchmarks/replay.py` | `make replay` |
| new items: evidence → recommendable | `benchmarks/new_items.py` | `make new-items` |
| impression demotion (replay) | `benchmarks/replay_impressions.py` | - |
| A/B arms side by side, OPE checked | `benchmarks/arms.py` | - |
| index snapshots: restart to ready | `benchmarks/snapshot.py` | `make snapshot-bench` |
| training cost vs catalog size, losses | `benchmarks/train_bench.py` | `make train-bench` |
| worker memory at 1M items x d = 64 | `benchmarks/memory.py` | `make memory-bench` |
| scale-out: 1, 2, 4 workers, global signals | `benchmarks/scaleout.py` | |
| scale-out through Kafka: 1, 2, 4 real workers | `benchmarks/scaleout_kafka.py` | |
"""


def _demote(body: str) -> str:
    """Make a section's top heading level 2 so every section nests under the title."""
    if not body.startswith("# "):
        return body
    return "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())


def assemble(root: Path = HERE.parent) -> Path:
    """Write ROOT/BENCHMARKS.md from the section files present; returns its path."""
    parts = [HEADER]
    for name, title in SECTIONS:
        path = HERE / name
        if path.is_file():
            body = _demote(path.read_text().strip())
            # images sit beside the section files: make their links relative to the root
            body = re.sub(
                r"\]\((?!https?://|/|benchmarks/)([^)]+\.png)\)", r"](benchmarks/\1)", body
            )
            parts.append(f"\n---\n\n<!-- {title}: from benchmarks/{name} -->\n\n{body}\n")
        else:
            parts.append(f"\n---\n\n## {title}\n\nNot run yet (`benchmarks/{name}` missing).\n")
    out = root / "BENCHMARKS.md"
    out.write_text("".join(parts))
    return out


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    print(assemble())
