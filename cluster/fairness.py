"""FairGate: a cap on concurrent actor starts, shared fairly between tenants.

Binding a memory to an actor (load its checkpoint, replay its log) costs CPU; the supervisor
lets at most `limit` run at once. Waiters queue per key (the tenant): FIFO within a tenant,
round-robin across tenants, so a tenant's burst of 1,000 forks delays another tenant's single
wake-up by at most one start per busy tenant ahead of it, not by the whole burst.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from contextlib import asynccontextmanager
from typing import AsyncIterator

__all__ = ["FairGate"]


class FairGate:
    """`async with gate.slot(key):` holds one of `limit` slots; waiters are served in turns by key."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a FairGate needs at least one slot")
        self._limit = limit
        self._active = 0
        self._queues: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        await self._acquire(key)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, key: str) -> None:
        if self._active < self._limit and not self._queues:
            self._active += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # the slot was handed to us just as we gave up: pass it on
            else:
                self._drop(key, turn)
            raise

    def _release(self) -> None:
        """Hand the slot to the next tenant in turn (its oldest waiter), or free it."""
        while self._queues:
            key, queue = next(iter(self._queues.items()))
            turn = queue.popleft()
            if queue:
                self._queues.move_to_end(key)  # the tenant waits for its next turn
            else:
                del self._queues[key]
            if not turn.done():
                turn.set_result(None)
                return
        self._active -= 1

    def _drop(self, key: str, turn: asyncio.Future) -> None:
        queue = self._queues.get(key)
        if queue is not None and turn in queue:
            queue.remove(turn)
            if not queue:
                del self._queues[key]
