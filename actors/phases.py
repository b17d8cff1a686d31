"""Phases: where the seconds of an actor's start went (imports, storage, checkpoint, replay, ...).

A start report is how we know whether a slow rehydration was torch's import, a slow store or a
long WAL; the supervisor keeps the recent ones and the cluster benchmark prints them.
"""

from __future__ import annotations

import time

__all__ = ["Phases"]


class Phases:
    """Consecutive named laps: `lap(name)` books the time since the previous lap under `name`."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self._laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self._laps[name] = self._laps.get(name, 0.0) + (now - self._last)
        self._last = now

    def as_dict(self) -> dict[str, float]:
        """Seconds per phase (rounded to 0.1 ms) plus `total`."""
        laps = {name: round(seconds, 4) for name, seconds in self._laps.items()}
        return {**laps, "total": round(self._last - self._start, 4)}
