"""Calls from the control plane to memory actors: cached handles, recovery, one retry.

The fast path is one actor call on a cached handle. If the actor is gone (crash, `ray.kill`,
node loss, hibernation), the call raises a Ray actor error; the router then asks the
supervisor for a live actor (which rehydrates the memory from checkpoint + WAL) and retries
once. Writes carry a request id, so the retry of a write that reached the WAL before the crash
returns the replayed result instead of being applied twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from ray.exceptions import RayActorError, RayTaskError

from errors import MemoryNotFound, Unavailable

from cluster.supervisor import unwrap

__all__ = ["ActorRouter"]

log = logging.getLogger(__name__)

TOUCH_EVERY = 1.0  # seconds between "in use" reports per memory (LRU precision)


class ActorRouter:
    """Routes calls for memory ids to their actors via one supervisor handle."""

    def __init__(self, supervisor: Any, exists: Callable[[str], Awaitable[bool]]) -> None:
        self._supervisor = supervisor
        self._exists = exists  # registry check before (re)starting an actor
        self._handles: dict[str, Any] = {}
        self._touched: dict[str, float] = {}

    async def ensure(self, qname: str, *, check_registry: bool = True) -> Any:
        """A live actor for `qname` (MemoryNotFound if the memory is not registered)."""
        if check_registry and not await self._exists(qname):
            raise MemoryNotFound(f"memory {qname.split('/', 1)[1]} not found")
        try:
            handle = await self._supervisor.ensure.remote(qname)
        except RayTaskError as exc:
            raise unwrap(exc) from None
        except RayActorError as exc:
            raise Unavailable(f"the actor supervisor is unavailable: {exc}") from exc
        self._handles[qname] = handle
        self._touched[qname] = time.monotonic()
        return handle

    async def call(self, qname: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` on `qname`'s actor, recovering it once if it is gone."""
        last: BaseException | None = None
        for attempt in range(2):
            handle = self._handles.get(qname)
            if handle is None:
                handle = await self.ensure(qname)
            self._touch(qname)
            try:
                return await getattr(handle, method).remote(*args, **kwargs)
            except RayActorError as exc:  # died or unreachable: rehydrate and retry
                log.info("actor of %s is gone (%s); recovering", qname, type(exc).__name__)
                last = exc
            except RayTaskError as exc:
                cause = unwrap(exc)
                if not isinstance(cause, Unavailable) or attempt:  # Unavailable: hibernating
                    raise cause from None
                last = cause
            self._handles.pop(qname, None)
        raise Unavailable(f"memory {qname.split('/', 1)[1]} could not be reached: {last}") from last

    async def call_if_live(self, qname: str, method: str, *args: Any) -> Any:
        """`method` on `qname`'s actor if this router holds a live handle; None otherwise (never
        starts or wakes a memory: for calls that only matter while it is live)."""
        handle = self._handles.get(qname)
        if handle is None:
            return None
        try:
            return await getattr(handle, method).remote(*args)
        except (RayActorError, RayTaskError):
            return None

    def forget(self, qname: str) -> None:
        self._handles.pop(qname, None)
        self._touched.pop(qname, None)

    def _touch(self, qname: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(qname, 0.0) >= TOUCH_EVERY:
            self._touched[qname] = now
            self._supervisor.touch.remote([qname])  # fire-and-forget: LRU order only
