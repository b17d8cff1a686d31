"""Warm spare memory actors: processes that paid their start-up before anyone needed them.

Starting a memory actor is mostly process start-up, not the memory: on 2 cores a Ray worker
takes ~0.7 s, our imports ~0.5 s and `import torch` ~2 s, while loading the default memory's
checkpoint takes ~0.07 s. So the supervisor keeps `size` spares: MemoryActors created with no
memory that have run `warm()` (imports done, storage open). The next fork, rehydration or
recovery takes one (`start(qname)` binds it to that memory) and a replacement warms up in the
background, so the caller waits for the state load instead of the start-up.

Processes are reused: a memory that hibernates is released (`MemoryActor.release`) and its
process given back to the pool (`give_back`), as long as live plus idle processes stay within
the supervisor's bound (the live cap plus `spare_actors_max`). So a burst (1,000 forks at a
live cap of 32) recycles the same processes instead of starting 1,000, and memories put to
sleep together leave their processes ready for the next wake-ups; `shrink` lets the surplus
over `size` exit once idle for `idle_seconds`.

Why not Ray's own worker pool with `preload_python_modules`: Ray prestarts idle workers only
when the raylet starts (and only a few), never refills the pool, and reuses no task worker for
an actor, so after the first few actors every start pays the full import again; meanwhile every
worker of the node (Serve's controller, proxies, replicas, the supervisor) would import torch.
Measured in bench/cluster_bench.py's notes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

__all__ = ["Slot", "SparePool"]

log = logging.getLogger(__name__)

RETRY_AFTER = 30.0  # seconds without new spares after one failed to warm up (no crash loops)


@dataclass(frozen=True)
class Slot:
    """One memory actor process: its Ray name (to wait for its death) and its handle."""

    name: str
    handle: Any


class SparePool:
    """Keeps `size` warm, unbound memory actors for the supervisor's next start."""

    def __init__(self, create: Callable[[], Slot], kill: Callable[[Slot], Awaitable[None]],
                 size: int, timeout: float, idle_seconds: float = 60.0) -> None:
        self._create = create
        self._kill = kill
        self._size = size
        self._idle = idle_seconds
        self._timeout = timeout
        self._ready: deque[tuple[Slot, float]] = deque()  # (spare, idle since), oldest first
        self._warming: dict[str, tuple[Slot, asyncio.Task]] = {}
        self._waiters = 0  # takers waiting for a spare that is still warming up
        self._paused_until = 0.0
        self._stopped = False

    @property
    def ready(self) -> int:
        return len(self._ready)

    def fill(self, room: int) -> None:
        """Start warming new spares until `size` are ready or warming, never more than `room`
        idle processes (no-op once stopped)."""
        if self._stopped or time.monotonic() < self._paused_until:
            return
        while len(self._ready) + len(self._warming) < min(self._size, room):
            try:
                slot = self._create()
            except Exception as exc:  # noqa: BLE001 - a spare is an optimisation, never an error
                log.warning("could not create a spare memory actor: %s", exc)
                self._paused_until = time.monotonic() + RETRY_AFTER
                return
            task = asyncio.get_running_loop().create_task(self._warm(slot))
            self._warming[slot.name] = (slot, task)

    def take_ready(self) -> Slot | None:
        """A warm spare if one is ready now, without waiting for one that is warming."""
        return self._ready.pop()[0] if self._ready else None

    async def take(self) -> Slot | None:
        """A warm spare; None when none is ready or warming for this caller (start cold then).

        Waiting for a spare that is already warming is never slower than a cold start begun
        now; but each warming spare is waited for by one caller at most, so a burst of starts
        still runs in parallel instead of queueing behind one spare.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            if self._ready:
                return self._ready.pop()[0]  # the most recently used: its pages are warm
            left = deadline - time.monotonic()
            if len(self._warming) <= self._waiters or left <= 0:
                return None
            self._waiters += 1
            try:
                tasks = {task for _, task in self._warming.values()}
                await asyncio.wait(tasks, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._waiters -= 1

    def give_back(self, slot: Slot, room: int) -> bool:
        """Keep a released (warm, unbound) process for the next start if fewer than `room` are
        idle or warming; False otherwise (the caller stops it)."""
        if self._stopped or len(self._ready) + len(self._warming) >= room:
            return False
        self._ready.append((slot, time.monotonic()))
        return True

    def adopt(self, slot: Slot, room: int) -> bool:
        """Take in a spare found alive after a supervisor restart; False if the pool is full."""
        return self.give_back(slot, room)

    def shrink(self) -> list[Slot]:
        """Spares beyond `size` idle for `idle_seconds`, removed from the pool for the caller to stop."""
        now, surplus = time.monotonic(), []
        while len(self._ready) > self._size and now - self._ready[0][1] >= self._idle:
            surplus.append(self._ready.popleft()[0])
        return surplus

    def drain(self) -> list[Slot]:
        """Stop for good: every spare, ready or warming, for the caller to kill."""
        self._stopped = True
        slots = [slot for slot, _since in self._ready]
        self._ready.clear()
        for slot, task in self._warming.values():
            task.cancel()
            slots.append(slot)
        self._warming.clear()
        return slots

    async def _warm(self, slot: Slot) -> None:
        ok = False
        try:
            await asyncio.wait_for(slot.handle.warm.remote(), self._timeout)
            ok = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged; the next start is simply cold
            log.warning("spare memory actor %s did not warm up: %s", slot.name, exc)
            self._paused_until = time.monotonic() + RETRY_AFTER
        finally:
            # No await between leaving `_warming` and joining `_ready`: takers see one or the other.
            self._warming.pop(slot.name, None)
            if ok and not self._stopped:
                self._ready.append((slot, time.monotonic()))
        if not ok:
            await self._kill(slot)
