"""streamrec: a streaming recommendation worker (Kafka -> ONNX sequence encoder -> HNSW).

Public API:
    load_model: load a trained model directory for offline scoring (onnxruntime only).
    Settings, load_settings: the worker's configuration.
    Worker: the run loop.
    StreamrecError and subclasses: see ``streamrec.errors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamrec.errors import (
    BadEvent,
    BrokerError,
    ConfigError,
    ConflictError,
    FencedError,
    ItemIndexError,
    ModelError,
    StoreError,
    StreamrecError,
)

if TYPE_CHECKING:
    from streamrec.ops.settings import Settings, load_settings
    from streamrec.training.offline import load_model
    from streamrec.worker.loop import Worker

__all__ = [
    "BadEvent",
    "BrokerError",
    "ConfigError",
    "ConflictError",
    "FencedError",
    "ItemIndexError",
    "ModelError",
    "Settings",
    "StoreError",
    "StreamrecError",
    "Worker",
    "load_model",
    "load_settings",
]

_LAZY = {
    "load_model": ("streamrec.training.offline", "load_model"),
    "Settings": ("streamrec.ops.settings", "Settings"),
    "load_settings": ("streamrec.ops.settings", "load_settings"),
    "Worker": ("streamrec.worker.loop", "Worker"),
}


def __getattr__(name: str) -> Any:
    # lazy, so `import streamrec` stays cheap and never pulls kafka or onnxruntime by itself
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'streamrec' has no attribute {name!r}")
