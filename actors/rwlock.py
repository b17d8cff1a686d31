"""`ReadWriteLock`: many readers at once, or one writer.

A memory actor's writes hold it alone (`with lock:`, as a plain Lock), its reads share it
(`with lock.shared():`), so a read sees the memory as of a write's answer, never in the middle
of one: a batch is learned chunk by chunk, and the step, counters and weight hash change after
the weights. A waiting writer goes first: once one waits, new readers wait behind it, so a
stream of reads never starves writes. Not reentrant in either mode.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    def __enter__(self) -> "ReadWriteLock":
        with self._changed:
            self._writers_waiting += 1
            try:
                self._changed.wait_for(lambda: not self._writing and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writing = True
        return self

    def __exit__(self, *exc: object) -> None:
        with self._changed:
            self._writing = False
            self._changed.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                if not self._readers:
                    self._changed.notify_all()
