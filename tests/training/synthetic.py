"""Synthetic data and model sizes shared by the training tests."""

from __future__ import annotations

import random

TINY = {"dim": 16, "max_len": 12, "blocks": 2, "heads": 2, "dropout": 0.1}


def planted_sequences(
    num_items: int = 40, users: int = 240, length: int = 12, seed: int = 0
) -> dict[str, list[str]]:
    """Users walk the item ring: item k is always followed by item k+1 mod num_items."""
    rng = random.Random(seed)
    out = {}
    for user in range(users):
        start = rng.randrange(num_items)
        out[f"user-{user}"] = [f"item-{(start + j) % num_items}" for j in range(length)]
    return out
