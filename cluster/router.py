"""Calls from the control plane to memory actors: cached handles, recovery, bounded retries.

The fast path is one actor call on a cached handle, `handle.route((qname, method, args,
kwargs))`, which the actor refuses if it no longer serves `qname` (its process was released and
given another memory). If the actor is gone (crash, `ray.kill`, node loss), hibernating, or
refuses, the router asks the supervisor for a live actor (which rehydrates the memory from
checkpoint + WAL) and tries again, with backoff, until `patience` seconds have passed: a lost
node costs callers a pause, not an error. Writes carry a request id, so the retry of a write
that reached the WAL before a crash returns the replayed result instead of being applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from ray.exceptions import RayActorError, RayTaskError

from errors import Busy, Unavailable
from storage import memory_not_found, shown

from cluster.supervisor import unwrap

__all__ = ["ActorRouter"]

log = logging.getLogger(__name__)

TOUCH_EVERY = 1.0  # seconds between "in use" reports per memory (LRU precision)
FIRST_BACKOFF, MAX_BACKOFF = 0.05, 1.0  # seconds between attempts, doubling


class ActorRouter:
    """Routes calls for memory ids to their actors via one supervisor handle."""

    def __init__(self, supervisor: Any, exists: Callable[[str], Awaitable[bool]],
                 patience: float = 120.0) -> None:
        self._supervisor = supervisor
        self._patience = patience
        self._exists = exists  # registry check before (re)starting an actor (may raise Busy)
        self._handles: dict[str, Any] = {}
        self._touched: dict[str, float] = {}

    async def ensure(self, qname: str) -> Any:
        """A live actor for `qname` (MemoryNotFound if the memory is not registered, Busy while
        it is being created)."""
        if not await self._exists(qname):
            raise memory_not_found(qname)
        handle, _ = await self._ensure(qname, with_summary=False)
        self.adopt(qname, handle)
        return handle

    async def start(self, qname: str) -> tuple[Any, dict]:
        """Start the actor of a memory being created: its handle and summary (step,
        weight_hash, weight_parameters, from the start itself: no second call). Calls are not
        routed to it until `adopt`: a write acknowledged before the creation is whole would be
        lost if the creation then failed."""
        return await self._ensure(qname, with_summary=True)

    def adopt(self, qname: str, handle: Any) -> None:
        """Route `qname`'s calls to `handle` (from `start`, once its creation is whole)."""
        self._handles[qname] = handle
        self._touched[qname] = time.monotonic()

    async def _ensure(self, qname: str, *, with_summary: bool) -> tuple[Any, dict | None]:
        try:
            return await self._supervisor.ensure.remote(qname, with_summary)
        except RayTaskError as exc:
            raise unwrap(exc) from None
        except RayActorError as exc:
            raise Unavailable(f"the actor supervisor is unavailable: {exc}") from exc

    async def call(self, qname: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` on `qname`'s actor, recovering it while it is gone."""
        deadline = time.monotonic() + self._patience
        backoff = 0.0  # a stale handle is retried at once; then back off
        while True:
            try:
                handle = self._handles.get(qname) or await self.ensure(qname)
                self._touch(qname)
                return await handle.route.remote((qname, method, args, kwargs))
            except RayActorError as exc:  # died or unreachable: rehydrate and retry
                log.info("actor of %s is gone (%s); recovering", qname, type(exc).__name__)
                last: BaseException = exc
            except RayTaskError as exc:
                cause = unwrap(exc)
                if not isinstance(cause, Unavailable) or isinstance(cause, Busy):
                    raise cause from None  # Busy: live, and waiting here would not free it
                last = cause
            except Busy:  # from ensure: being created, and waiting here would hold the caller
                raise
            except Unavailable as exc:  # from ensure: the supervisor could not start it yet
                last = exc
            self._handles.pop(qname, None)
            if time.monotonic() + backoff > deadline:
                raise Unavailable(f"memory {shown(qname)} could not be reached: {last}") from last
            await asyncio.sleep(backoff)
            backoff = min(max(2 * backoff, FIRST_BACKOFF), MAX_BACKOFF)

    async def call_if_live(self, qname: str, method: str, *args: Any) -> Any:
        """`method` on `qname`'s actor if this router holds a live handle; None otherwise (never
        starts or wakes a memory: for calls that only matter while it is live)."""
        handle = self._handles.get(qname)
        if handle is None:
            return None
        try:
            return await handle.route.remote((qname, method, args, {}))
        except (RayActorError, RayTaskError):  # gone, or serving another memory by now
            return None

    def holds(self, qname: str) -> bool:
        """Whether this router has a handle for `qname` (it routed a call there recently)."""
        return qname in self._handles

    def forget(self, qname: str) -> None:
        self._handles.pop(qname, None)
        self._touched.pop(qname, None)

    def _touch(self, qname: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(qname, 0.0) >= TOUCH_EVERY:
            self._touched[qname] = now
            self._supervisor.touch.remote([qname])  # fire-and-forget: LRU order only
