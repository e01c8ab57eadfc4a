"""Training, export and offline evaluation of the sequence encoder.

torch is imported only by ``model``, ``train`` and ``export``; ``data``, ``metrics``,
``evaluate``, ``baselines``, ``offline`` and ``cli`` work without it.
"""

from __future__ import annotations

from streamrec.training.offline import OfflineModel, load_model

__all__ = ["OfflineModel", "load_model"]
