"""Filters: callables that look at an event's metadata and say whether to keep it.

The producer applies its filter before an object is put in a store (a dropped
object costs nothing); the consumer applies its filter before handing anything
out (and still evicts a dropped object that the producer marked ``evict``).
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["NullFilter", "SamplingFilter"]


class NullFilter:
    """Keeps everything."""

    def __call__(self, metadata: dict[str, Any]) -> bool:
        return True


class SamplingFilter:
    """Keeps each event with probability ``p`` (for thinning a fast stream)."""

    def __init__(self, p: float, *, seed: int | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"SamplingFilter probability must be in [0, 1], got {p}")
        self.p = p
        self._rng = random.Random(seed)

    def __call__(self, metadata: dict[str, Any]) -> bool:
        return self._rng.random() < self.p
