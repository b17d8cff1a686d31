"""The supervisor: one named, detached async actor per deployment that owns the live-actor table.

Every gateway replica talks to the same supervisor (looked up by name in the deployment's Ray
namespace), so the least-recently-used order, the cap on live memory actors and idle
hibernation are decided in exactly one place. It is the only creator of memory actors:

    ensure(qname)  live and answering -> its handle; else make room (hibernate LRU), start one
    touch(qnames)  callers report use (throttled, fire-and-forget) for LRU and idleness
    reaper         hibernates actors idle for idle_seconds

Per-memory asyncio locks serialise start/hibernate/remove of one memory; `_cap_lock` makes the
"count, evict, reserve a slot" step atomic, so the cap holds even under a burst of starts. If
the supervisor itself dies, Ray restarts it and it re-adopts the memory actors still alive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from errors import Unavailable

from actors import ACTOR_PREFIX, ActorSpec, MemoryActor, actor_name

__all__ = ["Supervisor", "SUPERVISOR_NAME", "supervisor_handle", "unwrap"]

log = logging.getLogger(__name__)

SUPERVISOR_NAME = "supervisor"


def unwrap(exc: BaseException) -> BaseException:
    """The error raised inside an actor, without Ray's RayTaskError wrappers."""
    while isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        exc = exc.cause
    return exc


class Supervisor:
    """Live memory actors of one namespace: LRU order, cap, idle hibernation, (re)start."""

    def __init__(self, namespace: str, spec: ActorSpec, max_live: int, idle_seconds: float,
                 actor_options: dict[str, Any], start_timeout: float) -> None:
        self._ns = namespace
        self._spec = spec
        self._max_live = max_live
        self._idle = idle_seconds
        self._options = actor_options
        self._timeout = start_timeout
        self._live: OrderedDict[str, float] = OrderedDict()  # qname -> last use; LRU first
        self._starting: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._cap_lock = asyncio.Lock()
        self._reaper: asyncio.Task | None = None
        self._remote_cls = ray.remote(MemoryActor)

    # ---- API --------------------------------------------------------------------------------

    async def ensure(self, qname: str) -> Any:
        """Handle of memory `qname`'s actor, started (or rehydrated) if needed."""
        self._boot()
        async with self._lock(qname):
            handle = await self._alive(qname)
            if handle is None:
                self._live.pop(qname, None)
                await self._reserve(qname)
                try:
                    handle = await self._start(qname)
                finally:
                    self._starting.discard(qname)
            self._live[qname] = time.monotonic()
            self._live.move_to_end(qname)
            return handle

    async def touch(self, qnames: list[str]) -> None:
        self._boot()
        now = time.monotonic()
        for qname in qnames:
            if qname in self._live:
                self._live[qname] = now
                self._live.move_to_end(qname)

    async def hibernate(self, qname: str) -> bool:
        """Checkpoint and stop `qname`'s actor now; False if it was not live."""
        self._boot()
        async with self._lock(qname):
            return await self._hibernate(qname)

    async def remove(self, qname: str) -> None:
        """Kill `qname`'s actor without a checkpoint (the memory is being deleted)."""
        self._boot()
        async with self._lock(qname):
            await self._kill(qname)

    async def live(self) -> list[str]:
        self._boot()
        return list(self._live)

    async def count(self) -> int:
        self._boot()
        return len(self._live) + len(self._starting)

    async def stop_all(self) -> int:
        """Kill every memory actor of the namespace (tests, teardown); returns how many."""
        names = set(self._live) | set(self._starting) | set(self._named_actors())
        for qname in names:
            async with self._lock(qname):
                await self._kill(qname)
        if self._reaper is not None:
            self._reaper.cancel()
        return len(names)

    # ---- internals --------------------------------------------------------------------------

    def _boot(self) -> None:
        """First call after (re)start: adopt actors still alive, start the idle reaper."""
        if self._reaper is not None:
            return
        now = time.monotonic()
        for qname in self._named_actors():
            self._live.setdefault(qname, now)
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    def _named_actors(self) -> list[str]:
        found = ray.util.list_named_actors(all_namespaces=True)
        return [a["name"][len(ACTOR_PREFIX):] for a in found
                if a["namespace"] == self._ns and a["name"].startswith(ACTOR_PREFIX)]

    def _lock(self, qname: str) -> asyncio.Lock:
        return self._locks.setdefault(qname, asyncio.Lock())

    def _get(self, qname: str) -> Any | None:
        try:
            return ray.get_actor(actor_name(qname), namespace=self._ns)
        except ValueError:
            return None

    async def _alive(self, qname: str) -> Any | None:
        """The actor if it exists and answers (starting it if a previous start was cut short)."""
        handle = self._get(qname)
        if handle is None:
            return None
        try:
            if not await asyncio.wait_for(handle.ping.remote(), self._timeout):
                await asyncio.wait_for(handle.start.remote(), self._timeout)
            return handle
        except (RayActorError, asyncio.TimeoutError):
            await self._kill(qname)
            return None
        except Exception as exc:
            await self._kill(qname)
            raise unwrap(exc) from None

    async def _reserve(self, qname: str) -> None:
        """Hibernate least recently used actors until a slot is free, then take it."""
        deadline = time.monotonic() + self._timeout
        async with self._cap_lock:
            while len(self._live) + len(self._starting) >= self._max_live:
                victim = next((q for q in self._live if not self._lock(q).locked()), None)
                if victim is None:
                    if time.monotonic() > deadline:
                        raise Unavailable(f"all {self._max_live} live memory actors are busy; retry")
                    await asyncio.sleep(0.05)
                    continue
                async with self._lock(victim):
                    await self._hibernate(victim)
            self._starting.add(qname)

    async def _start(self, qname: str) -> Any:
        handle = self._remote_cls.options(
            name=actor_name(qname), namespace=self._ns, lifetime="detached", get_if_exists=True,
            max_restarts=0, **self._options,
        ).remote(qname, self._spec)
        try:
            await asyncio.wait_for(handle.start.remote(), self._timeout)
        except asyncio.TimeoutError as exc:
            await self._kill(qname)
            raise Unavailable(f"memory {qname} did not start within {self._timeout:.0f}s") from exc
        except Exception as exc:
            await self._kill(qname)
            raise unwrap(exc) from None
        return handle

    async def _hibernate(self, qname: str) -> bool:
        handle = self._get(qname)
        if handle is None:
            self._live.pop(qname, None)
            return False
        try:
            await asyncio.wait_for(handle.prepare_hibernate.remote(), self._timeout)
        except Exception as exc:  # noqa: BLE001 - stop it anyway: the WAL still holds every write
            log.warning("hibernating %s without a fresh checkpoint: %s", qname, unwrap(exc))
        await self._kill(qname)
        return True

    async def _kill(self, qname: str) -> None:
        """Kill the actor and wait until its name is free (so a restart cannot find it)."""
        self._live.pop(qname, None)
        handle = self._get(qname)
        if handle is None:
            return
        ray.kill(handle, no_restart=True)
        deadline = time.monotonic() + 30
        while self._get(qname) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def _reap_forever(self) -> None:
        period = max(0.1, min(self._idle / 4, 10.0))
        while True:
            await asyncio.sleep(period)
            try:
                await self._reap_once()
            except Exception:  # noqa: BLE001 - the reaper must outlive one bad round
                log.exception("idle reaper round failed")

    async def _reap_once(self) -> None:
        now = time.monotonic()
        for qname in [q for q, used in self._live.items() if now - used >= self._idle]:
            lock = self._lock(qname)
            if lock.locked():
                continue
            async with lock:
                used = self._live.get(qname)
                if used is not None and time.monotonic() - used >= self._idle:
                    log.info("hibernating idle memory %s", qname)
                    await self._hibernate(qname)


def supervisor_handle(namespace: str, spec: ActorSpec, max_live: int, idle_seconds: float,
                      actor_options: dict[str, Any], start_timeout: float) -> Any:
    """The deployment's supervisor, created on first use (the first caller's settings win)."""
    node = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=True)
    cls = ray.remote(Supervisor)
    return cls.options(
        name=SUPERVISOR_NAME, namespace=namespace, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_restarts=-1, max_task_retries=3, max_concurrency=1000,
        scheduling_strategy=strategy,
    ).remote(namespace, spec, max_live, idle_seconds, actor_options, start_timeout)
