"""Measuring recommendations offline: streaming replay, off-policy estimates, reports.

- ``replay``: prequential (test-then-train) replay through the worker's batch step.
- ``ope``: IPS and SNIPS estimates from the published lists and later events.
- ``cli``: the ``streamrec replay`` and ``streamrec ope`` commands and their reports.

May use ranking, state and the worker's pure batch step; never the run loop or Kafka.
"""
