"""The supervisor: one named, detached async actor per deployment that owns the live-actor table.

Every gateway replica talks to the same supervisor (looked up by name in the deployment's Ray
namespace), so the least-recently-used order, the cap on live memory actors and idle
hibernation are decided in exactly one place. It is the only creator of memory actors, and it
keeps which actor serves which memory (actor names are opaque: see actors.new_actor_name):

    ensure(qname)  live and answering -> its handle; else make room (hibernate LRU), then bind a
                   warm spare to the memory (cluster/spares.py), or the process of a memory idle
                   for reuse_idle_seconds, or, with neither, start a new actor; with the
                   start's summary (which create and fork answer with)
    touch(qnames)  callers report use (throttled, fire-and-forget) for LRU and idleness
    reaper         hibernates actors idle for idle_seconds, lets surplus spares exit
    collector      deletes checkpoint chunks no manifest names (storage/gc.py), every gc interval

Hibernating releases the memory from its process and gives the process back to the spare pool,
so evictions at the cap feed the next starts without new processes; live plus idle processes
stay within max_live_actors + spare_actors_max.
Starts pass a FairGate (cluster/fairness.py): at most max_concurrent_starts at once, tenants
served in turns. Per-memory asyncio locks serialise start/hibernate/remove of one memory;
`_cap_lock` makes the "count, evict, reserve a slot" step atomic, so the cap holds even under a
burst of starts. The cap counts memories; spares come on top of it. If the supervisor itself
dies, Ray restarts it and it re-adopts the actors still alive by asking each one which memory
it serves. Supervisor and memory actors are detached, so they can outlive a deployment: one
running other code (actors/code_id.py) is replaced by `current_supervisor`, and memory actors of
other code are stopped when adopted (their WAL holds every write).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict, deque
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from errors import Unavailable
from storage import shown

from actors import ACTOR_PREFIX, CODE_ID, ActorSpec, MemoryActor, new_actor_name
from cluster.collector import run_collector
from cluster.fairness import FairGate
from cluster.settings import ClusterSettings
from cluster.spares import Slot, SparePool

__all__ = ["Supervisor", "SUPERVISOR_NAME", "current_supervisor", "unwrap"]

log = logging.getLogger(__name__)

SUPERVISOR_NAME = "supervisor"
START_REPORTS = 64  # recent start reports kept for `starts()` (benchmarks, diagnosis)


def unwrap(exc: BaseException) -> BaseException:
    """The error raised inside an actor, without Ray's RayTaskError wrappers."""
    while isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        exc = exc.cause
    return exc


# Seconds a deleted memory's process has to release cleanly before it is killed instead.
DELETE_RELEASE_WAIT = 10.0


class Supervisor:
    """Live memory actors of one namespace: LRU order, cap, idle hibernation, (re)start, spares."""

    def __init__(self, settings: ClusterSettings, spec: ActorSpec) -> None:
        self._settings = settings
        self._ns = settings.namespace
        self._spec = spec
        self._max_live = settings.max_live_actors
        self._idle = settings.idle_seconds
        self._options = actor_options(settings)
        self._timeout = settings.actor_start_timeout
        self._actors: dict[str, Slot] = {}  # qname -> the actor serving it (live or starting)
        self._live: OrderedDict[str, float] = OrderedDict()  # qname -> last use; LRU first
        self._starting: set[str] = set()
        # One lock per memory while someone holds or awaits it: a dict kept one per name ever used.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._cap_lock = asyncio.Lock()
        self._boot_lock = asyncio.Lock()
        self._gate = FairGate(settings.max_concurrent_starts)
        self._tasks: list[asyncio.Task] = []
        self._remote_cls = ray.remote(MemoryActor)
        self._spares = SparePool(lambda: self._create(None), self._kill_slot, settings.spare_actors,
                                 self._timeout, settings.spare_idle_seconds)
        self._max_processes = settings.max_live_actors + settings.spare_actors_max
        self._starts: deque[dict] = deque(maxlen=START_REPORTS)
        self._created = 0  # memory actor processes started by this supervisor

    # ---- API --------------------------------------------------------------------------------

    async def ensure(self, qname: str, with_summary: bool = False) -> tuple[Any, dict | None]:
        """(handle of memory `qname`'s actor, started or rehydrated if needed, its start()
        summary: step, weight_hash, weight_parameters). The summary is None for an actor that
        was live already unless `with_summary`: a memory just created or forked answers with
        it, so it needs no second call."""
        await self._boot()
        async with self._lock(qname):
            alive = await self._alive(qname, with_summary)
            if alive is None:
                self._live.pop(qname, None)
                async with self._gate.slot(qname.split("/", 1)[0]):
                    began = time.monotonic()
                    evicted = await self._reserve(qname)
                    try:
                        alive = await self._start(qname, {"reserve_s": round(time.monotonic() - began, 4),
                                                          "evicted": evicted})
                    finally:
                        self._starting.discard(qname)
            self._live[qname] = time.monotonic()
            self._live.move_to_end(qname)
            return alive

    async def touch(self, qnames: list[str]) -> None:
        await self._boot()
        now = time.monotonic()
        for qname in qnames:
            if qname in self._live:
                self._live[qname] = now
                self._live.move_to_end(qname)

    async def hibernate(self, qname: str) -> bool:
        """Hibernate `qname` now (WAL tail or checkpoint; its process becomes a spare); False if
        it was not live."""
        await self._boot()
        async with self._lock(qname):
            return await self._hibernate(qname) is not None

    async def remove(self, qname: str) -> None:
        """Stop serving `qname` without a checkpoint (the memory is being deleted): its process
        becomes a spare, as a hibernating memory's does (killing it made every create-and-delete
        cost a ~3 CPU-second process start, and Ray keeps each dead worker's log files and state
        for the session), or is killed if it does not release cleanly."""
        await self._boot()
        async with self._lock(qname):
            await self._hibernate(qname, save=False)

    async def identity(self) -> dict:
        """The code this supervisor runs (actors/code_id.py)."""
        return {"code": CODE_ID}

    async def live(self) -> list[str]:
        await self._boot()
        return list(self._live)

    async def count(self) -> int:
        await self._boot()
        return len(self._live) + len(self._starting)

    async def spares_ready(self) -> int:
        """Warm spares waiting for a memory (tests and benchmarks wait for one)."""
        await self._boot()
        return self._spares.ready

    async def processes(self) -> dict:
        """Memory actor processes: started so far, serving a memory, idle and ready (benchmarks)."""
        return {"started": self._created, "serving": len(self._actors), "idle": self._spares.ready}

    async def starts(self) -> list[dict]:
        """Recent starts, oldest first: {qname, spare (bool), seconds, timings (in the actor)}."""
        return list(self._starts)

    async def checkpoint_live(self, timeout: float) -> dict:
        """Before a graceful stop, save each live memory by hibernation's rule (a long unsaved
        tail is checkpointed, a short one stays in the WAL: MemoryActor.save_for_stop), all at
        once, each within `timeout` seconds: {"saved": n, "kept_as_log": n, "failed": [qname]}."""
        await self._boot()
        slots = {qname: self._actors[qname] for qname in list(self._live) if qname in self._actors}
        answers = await asyncio.gather(
            *(asyncio.wait_for(slot.handle.save_for_stop.remote(), timeout) for slot in slots.values()),
            return_exceptions=True)
        failed = [qname for qname, answer in zip(slots, answers) if isinstance(answer, BaseException)]
        for qname in failed:
            log.warning("could not checkpoint %s before stopping; its WAL still holds every write", qname)
        saved = sum(1 for answer in answers if answer is True)
        return {"saved": saved, "kept_as_log": len(slots) - len(failed) - saved, "failed": failed}

    async def stop_all(self) -> int:
        """Kill every memory actor and spare of the namespace (tests, teardown); returns how many
        memory actors. The supervisor starts no more spares afterwards."""
        names = set(self._live) | set(self._starting) | set(self._actors)
        for qname in names:
            async with self._lock(qname):
                await self._kill(qname)
        for slot in self._spares.drain():
            await self._kill_slot(slot)
        for slot in await self._named_slots():  # orphans: half-created before a restart
            await self._kill_slot(slot)
        for task in self._tasks:
            task.cancel()
        return len(names)

    # ---- internals --------------------------------------------------------------------------

    async def _boot(self) -> None:
        """First call after (re)start: adopt actors still alive, start the reaper, the collector
        and the spares."""
        if self._tasks:
            return
        async with self._boot_lock:
            if self._tasks:
                return
            await self._adopt()
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._reap_forever())]
            if self._settings.gc_interval_seconds > 0:
                self._tasks.append(loop.create_task(run_collector(
                    self._spec.storage, self._settings.gc_interval_seconds, self._settings.gc_grace_seconds)))
            self._spares.fill(self._idle_room())

    async def _named_slots(self) -> list[Slot]:
        found = ray.util.list_named_actors(all_namespaces=True)
        slots = []
        for entry in found:
            if entry["namespace"] == self._ns and entry["name"].startswith(ACTOR_PREFIX):
                try:
                    slots.append(Slot(entry["name"], ray.get_actor(entry["name"], namespace=self._ns)))
                except ValueError:  # died since listed
                    continue
        return slots

    async def _adopt(self) -> None:
        """Rebuild the memory -> actor table from the actors alive in the namespace."""
        known = {slot.name for slot in self._actors.values()}
        slots = [slot for slot in await self._named_slots() if slot.name not in known]
        answers = await asyncio.gather(
            *(asyncio.wait_for(slot.handle.identity.remote(), self._timeout) for slot in slots),
            return_exceptions=True)
        now = time.monotonic()
        for slot, answer in zip(slots, answers):
            qname = answer.get("qname") if isinstance(answer, dict) else None
            if isinstance(answer, BaseException):
                log.warning("memory actor %s does not answer (%s); stopping it", slot.name, answer)
            elif answer.get("code") != CODE_ID:  # left by another version: its WAL holds every write
                log.warning("memory actor %s (memory %s) runs other code (%s, this is %s); stopping it",
                            slot.name, shown(qname) if qname else "none, a spare", answer.get("code"), CODE_ID)
            elif qname is None and self._spares.adopt(slot, self._idle_room()):
                continue
            elif qname is not None and qname not in self._actors:
                self._actors[qname] = slot
                self._live[qname] = now
                continue
            await self._kill_slot(slot)  # unanswering, a surplus spare, or a duplicate

    def _idle_room(self) -> int:
        """How many idle processes may be kept: live plus idle stay within the live cap plus
        spare_actors_max, so the node's memory is bounded by the cap."""
        return self._max_processes - len(self._actors)

    def _lock(self, qname: str) -> asyncio.Lock:
        return self._locks.setdefault(qname, asyncio.Lock())

    def _create(self, qname: str | None) -> Slot:
        """A new memory actor process (qname None: a spare, bound by start(qname) later)."""
        name = new_actor_name()
        self._created += 1
        handle = self._remote_cls.options(
            name=name, namespace=self._ns, lifetime="detached", max_restarts=0, **self._options,
        ).remote(qname, self._spec)
        return Slot(name, handle)

    async def _alive(self, qname: str, with_summary: bool) -> tuple[Any, dict | None] | None:
        """(the actor, its start() summary if asked for) if it exists and answers; start() also
        finishes a start that was cut short, and is idempotent otherwise. None if it is gone."""
        slot = self._actors.get(qname)
        if slot is None:
            return None
        try:
            summary = None
            if with_summary or not await asyncio.wait_for(slot.handle.ping.remote(), self._timeout):
                summary = await asyncio.wait_for(slot.handle.start.remote(qname), self._timeout)
            return slot.handle, summary
        except (RayActorError, asyncio.TimeoutError):
            await self._kill(qname)
            return None
        except Exception as exc:
            await self._kill(qname)
            raise unwrap(exc) from None

    async def _reserve(self, qname: str) -> list[dict]:
        """Hibernate least recently used actors until a slot is free, then take it; returns the
        release timings of the memories evicted."""
        deadline = time.monotonic() + self._timeout
        evicted = []
        async with self._cap_lock:
            while len(self._live) + len(self._starting) >= self._max_live:
                victim = next((q for q in self._live if not self._lock(q).locked()), None)
                if victim is None:
                    if time.monotonic() > deadline:
                        raise Unavailable(f"all {self._max_live} live memory actors are busy; retry")
                    await asyncio.sleep(0.05)
                    continue
                async with self._lock(victim):
                    evicted.append(await self._hibernate(victim) or {})
            self._starting.add(qname)
        return evicted

    async def _start(self, qname: str, report: dict) -> tuple[Any, dict]:
        """Bind a process to `qname`: a warm spare, else one an idle memory hands over, else a
        spare still warming up, else a new one; then top the spares up again. (handle, the
        actor's start() summary)."""
        began = time.monotonic()
        try:
            slot = self._spares.take_ready() or await self._steal_idle(report) or await self._spares.take()
            summary = None if slot is None else await self._bind(qname, slot, spare=True)
            used_spare = summary is not None
            if summary is None:  # no spare, or it died while waiting
                slot = self._create(qname)
                summary = await self._bind(qname, slot, spare=False)
        finally:
            self._spares.fill(self._idle_room())
        self._starts.append({"qname": qname, "spare": used_spare, "seconds": round(time.monotonic() - began, 4),
                             "timings": summary.get("timings", {}), **report})
        return slot.handle, summary

    async def _steal_idle(self, report: dict) -> Slot | None:
        """During a burst of starts: hibernate the least recently used memory idle for
        reuse_idle_seconds and take its process; a wake-up later costs ~0.1 s, a new process now
        ~3 s (the pool still grows in the background, up to the bound)."""
        idle, now = self._settings.reuse_idle_seconds, time.monotonic()
        victim = next((q for q, used in self._live.items()
                       if now - used >= idle and not self._lock(q).locked()), None) if idle > 0 else None
        if victim is None:
            return None
        async with self._lock(victim):  # free just above, and nothing awaited since: no wait
            report["stole_from"] = await self._hibernate(victim, if_idle=True)
        return self._spares.take_ready() if report["stole_from"] is not None else None

    async def _bind(self, qname: str, slot: Slot, *, spare: bool) -> dict | None:
        """start(qname) on `slot`; None if a spare turned out dead (the caller starts cold)."""
        self._actors[qname] = slot
        try:
            return await asyncio.wait_for(slot.handle.start.remote(qname), self._timeout)
        except RayActorError:
            await self._kill(qname)
            if spare:
                return None
            raise Unavailable(f"the actor of memory {shown(qname)} died while starting; retry") from None
        except asyncio.TimeoutError as exc:
            await self._kill(qname)
            raise Unavailable(f"memory {shown(qname)} did not start within {self._timeout:.0f}s") from exc
        except Exception as exc:
            await self._kill(qname)
            raise unwrap(exc) from None

    async def _hibernate(self, qname: str, *, if_idle: bool = False, save: bool = True) -> dict | None:
        """Release the memory from its actor and keep the process as a spare (or stop it);
        None if it was not live, else the release's timings. With `if_idle`, a memory whose
        actor still runs a call (say a write waiting for the one it names in after_request_id)
        is left live, as used now: None. `save` False: no checkpoint (a deleted memory)."""
        slot = self._actors.get(qname)
        if slot is None:
            self._live.pop(qname, None)
            return None
        began = time.monotonic()
        try:
            # A deleted memory's name may be taken again at once: its release gets a short wait.
            wait = self._timeout if save else min(self._timeout, DELETE_RELEASE_WAIT)
            released = await asyncio.wait_for(slot.handle.release.remote(if_idle, save), wait)
        except Exception as exc:  # noqa: BLE001 - stop it anyway: the WAL still holds every write
            log.warning("hibernating %s by stopping its actor: %s", qname, unwrap(exc))
            released = None
        if released is not None and released.get("busy"):
            self._live[qname] = time.monotonic()
            self._live.move_to_end(qname)
            return None
        self._live.pop(qname, None)
        self._actors.pop(qname, None)
        if not (released and self._spares.give_back(slot, self._idle_room())):
            await self._kill_slot(slot)
        return {"seconds": round(time.monotonic() - began, 4), **(released or {}).get("timings", {})}

    async def _kill(self, qname: str) -> None:
        """Kill the memory's actor and wait until it is gone (before another may start)."""
        self._live.pop(qname, None)
        slot = self._actors.pop(qname, None)
        if slot is not None:
            await self._kill_slot(slot)

    async def _kill_slot(self, slot: Slot) -> None:
        """ray.kill is asynchronous: wait until the name is free before another actor may take
        the memory (what the old process still writes after that is fenced off; see kill_and_wait)."""
        await kill_and_wait(slot.handle, slot.name, self._ns, timeout=30)

    async def _reap_forever(self) -> None:
        period = max(0.1, min(self._idle / 4, 10.0))
        while True:
            await asyncio.sleep(period)
            try:
                await self._reap_once()
            except Exception:  # noqa: BLE001 - the reaper must outlive one bad round
                log.exception("idle reaper round failed")

    async def _reap_once(self) -> None:
        for slot in self._spares.shrink():
            await self._kill_slot(slot)
        now = time.monotonic()
        for qname in [q for q, used in self._live.items() if now - used >= self._idle]:
            lock = self._lock(qname)
            if lock.locked():
                continue
            async with lock:
                used = self._live.get(qname)
                if used is not None and time.monotonic() - used >= self._idle:
                    if await self._hibernate(qname, if_idle=True) is not None:
                        log.info("hibernated idle memory %s", qname)


def actor_options(settings: ClusterSettings) -> dict[str, Any]:
    """Ray options of every memory actor."""
    return {
        "max_concurrency": settings.actor_max_concurrency,
        "num_cpus": settings.actor_num_cpus,
        "scheduling_strategy": "SPREAD" if settings.actor_placement == "spread" else "DEFAULT",
        # Every request is a call to a memory actor: Ray's per-call task events (state API and
        # dashboard history) grew the GCS by ~3 KB a call in a soak, and cost CPU per call.
        "enable_task_events": False,
    }


def _create_supervisor(settings: ClusterSettings, spec: ActorSpec) -> Any:
    """The deployment's supervisor, created if none is named (the first caller's settings win)."""
    node = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=True)
    cls = ray.remote(Supervisor)
    return cls.options(
        name=SUPERVISOR_NAME, namespace=settings.namespace, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_restarts=-1, max_task_retries=3, max_concurrency=1000,
        scheduling_strategy=strategy,
    ).remote(settings, spec)


async def current_supervisor(settings: ClusterSettings, spec: ActorSpec) -> Any:
    """The deployment's supervisor, running this code: one of another version, left in the Ray
    cluster by an earlier deployment, is stopped and replaced (the new one stops that version's
    memory actors when it adopts them). A supervisor that does not answer in time is kept: it
    may be restarting, and refusing to serve would be worse."""
    handle = _create_supervisor(settings, spec)
    try:
        answer = await asyncio.wait_for(handle.identity.remote(), settings.actor_start_timeout)
    except AttributeError:  # from before code ids: no identity()
        answer = {}
    except (RayActorError, asyncio.TimeoutError) as exc:
        log.warning("supervisor of namespace %s did not say which code it runs (%s)", settings.namespace, exc)
        return handle
    if answer.get("code") == CODE_ID:
        return handle
    log.warning("supervisor of namespace %s runs other code (%s, this is %s); replacing it",
                settings.namespace, answer.get("code"), CODE_ID)
    await kill_and_wait(handle, SUPERVISOR_NAME, settings.namespace, timeout=settings.actor_start_timeout)
    return _create_supervisor(settings, spec)


async def kill_and_wait(handle: Any, name: str, namespace: str, timeout: float) -> None:
    """`ray.kill` the named actor and wait (up to `timeout`) until its name is free or held by
    another actor (a replacement): ray.kill is asynchronous. The name is freed a moment before
    the process exits, and a call already sent may still run there: the log's fencing token
    (MetadataStore.take_ownership) refuses whatever it would write once a successor started."""
    try:
        ray.kill(handle, no_restart=True)
    except (RayActorError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ray.get_actor(name, namespace=namespace) != handle:
                return
        except ValueError:
            return
        await asyncio.sleep(0.02)
