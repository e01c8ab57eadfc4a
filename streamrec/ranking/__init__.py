"""Turning a user's state into a ranked list (pure: no Kafka, no SQL, no clock).

- ``modelfiles``: the model directory contract; ``encoder``: onnxruntime user encoder.
- ``index``: the HNSW item index (hnswlib).
- candidate sources: ``trending``, ``covisit``, ``coldstart`` (new items); ``decay``: the
  time decay they share.
- ``fusion`` and ``explore``: fusing sources, exploration with logged propensities.
- ``rank``: the pure top-k filter; ``ranker``: ``Ranker``, the fused ranking the worker calls.
"""
