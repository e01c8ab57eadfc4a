"""Test-only launcher: ``python tests/faults/launch_worker.py [flags of streamrec run]``.

It installs fault-injection hooks on ``streamrec.worker.loop`` (test code reads these variables;
production code never does), then runs the normal CLI:

- ``FAULT_CRASH_AFTER_COMMIT=N``: SIGKILL itself right after the N-th database commit, before
  the batch is published (scenario 2).
- ``FAULT_FREEZE_BEFORE_COMMIT=N``: SIGSTOP itself just before the N-th commit (a zombie with a
  batch in hand, scenario 7); the test sends SIGCONT once the partitions have moved.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from streamrec.worker import loop as worker


def _nth_call(n: int, action: Any) -> Any:
    calls = [0]

    def hook(_arg: object) -> None:
        calls[0] += 1
        if calls[0] == n:
            action()

    return hook


def main() -> None:
    crash = int(os.environ.get("FAULT_CRASH_AFTER_COMMIT", "0"))
    if crash:
        worker.after_commit = _nth_call(crash, lambda: os.kill(os.getpid(), signal.SIGKILL))
    freeze = int(os.environ.get("FAULT_FREEZE_BEFORE_COMMIT", "0"))
    if freeze:
        worker.before_commit = _nth_call(freeze, lambda: os.kill(os.getpid(), signal.SIGSTOP))
    from streamrec.cli import cli

    cli(["run", *sys.argv[1:]], prog_name="streamrec")


if __name__ == "__main__":
    main()
