"""The domain's values and the pure fold of a user's state: no I/O, imports nothing else.

- ``events``: ``Event``, ``CatalogOp``, ``RecItem``, ``Recommendation``.
- ``history``: ``UserState`` and ``apply_event`` (the specification of the store).
"""
