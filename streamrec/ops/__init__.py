"""Running the worker: settings, metrics, HTTP endpoints, logging, retry backoff.

- ``settings``: the one frozen ``Settings`` object (the only reader of the environment).
- ``metrics``: every Prometheus metric, defined once; ``quality``: live quality signals.
- ``http``: ``/metrics``, ``/healthz``, ``/readyz``; ``logs``: JSON or plain logs, redaction.
- ``backoff``: the one exponential backoff.

Knows nothing of ranking, Kafka clients or the database.
"""
