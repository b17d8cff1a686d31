"""Ordered writes wait in the control plane, not in their memory's actor.

A write may name the write it must follow (`after_request_id`). Waiting for that one inside
the actor held one of its `NMEM_ACTOR_MAX_CONCURRENCY` call slots: eight successors in flight
left no slot for their predecessor, nor for reads, and the memory stood still until they timed
out (409 out_of_order for all). So a write first waits here, on this process's event loop
(which holds nothing), until its predecessor is applied. A predecessor sent through this
process is followed as it goes; of any other (sent through another gateway replica, or applied
long ago) the actor is asked, in one short call, and asked again now and then. The actor then
only checks the order (it never waits); if it does not know the predecessor after all, the
write comes back to wait here.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from actors import out_of_order

RECENT_APPLIED = 4096  # writes applied through this process that a successor may still name
FIRST_POLL, MAX_POLL = 0.05, 0.5  # seconds between asking the actor of a predecessor sent elsewhere


class OrderedWrites:
    """Writes in flight and recently applied through this process, by (memory, request id)."""

    def __init__(self) -> None:
        self._in_flight: dict[tuple[str, str], int] = {}  # a retry may overlap its first try
        self._applied: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._changed: dict[str, asyncio.Event] = {}  # set (and dropped) when a write of a memory starts or ends

    def started(self, qname: str, request_id: str) -> None:
        key = (qname, request_id)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self._changed_now(qname)

    def ended(self, qname: str, request_id: str, applied: bool) -> None:
        key = (qname, request_id)
        left = self._in_flight.pop(key) - 1
        if left:
            self._in_flight[key] = left
        if applied:
            self._applied[key] = None
            self._applied.move_to_end(key)
            if len(self._applied) > RECENT_APPLIED:
                self._applied.popitem(last=False)
        self._changed_now(qname)

    def _changed_now(self, qname: str) -> None:
        event = self._changed.pop(qname, None)
        if event is not None:
            event.set()

    def not_applied(self, qname: str, request_id: str) -> None:
        """The memory does not know write `request_id` after all (it was deleted and made again
        since, or no longer remembers the id): forget that it went through here."""
        self._applied.pop((qname, request_id), None)

    async def wait_for(self, qname: str, after: str, actor_has_applied: Callable[[], Awaitable[bool]],
                       deadline: float, wait_seconds: float) -> None:
        """Until write `after` of memory `qname` is applied; OutOfOrder (nothing of the waiting
        write applied, naming `wait_seconds`) if it is not by `deadline` (the loop's time)."""
        loop = asyncio.get_running_loop()
        poll, key = FIRST_POLL, (qname, after)
        while key not in self._applied:
            sent_here = key in self._in_flight  # then its end wakes us: no need to ask the actor
            if not sent_here and await actor_has_applied():
                return
            left = deadline - loop.time()
            if left <= 0:
                raise out_of_order(after, qname, wait_seconds)
            event = self._changed.setdefault(qname, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), left if sent_here else min(left, poll))
            except TimeoutError:
                poll = min(2 * poll, MAX_POLL)
