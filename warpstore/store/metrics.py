"""Optional per-operation metrics of a Store: count, bytes and time.

Off by default (it costs two clock reads per operation). Turned on, it is the
first thing to look at when a workflow is slower than expected: which store,
which operation, how many bytes, how long.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OperationMetrics", "StoreMetrics"]


@dataclass
class OperationMetrics:
    """Totals for one kind of operation."""

    count: int = 0
    bytes: int = 0
    time_s: float = 0.0
    min_s: float = field(default=float("inf"))
    max_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "bytes": self.bytes,
            "time_s": self.time_s,
            "avg_s": self.time_s / self.count if self.count else 0.0,
            "min_s": self.min_s if self.count else 0.0,
            "max_s": self.max_s,
        }


class StoreMetrics:
    """Thread-safe aggregation of operation timings."""

    def __init__(self) -> None:
        self._ops: dict[str, OperationMetrics] = {}
        self._lock = threading.Lock()

    def record(self, op: str, seconds: float, nbytes: int = 0, count: int = 1) -> None:
        with self._lock:
            m = self._ops.setdefault(op, OperationMetrics())
            m.count += count
            m.bytes += nbytes
            m.time_s += seconds
            m.min_s = min(m.min_s, seconds)
            m.max_s = max(m.max_s, seconds)

    def get(self, op: str) -> dict[str, Any]:
        with self._lock:
            return self._ops.get(op, OperationMetrics()).as_dict()

    def summary(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {op: m.as_dict() for op, m in sorted(self._ops.items())}

    def reset(self) -> None:
        with self._lock:
            self._ops.clear()
