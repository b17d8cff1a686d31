"""Creations: a memory's record is marked `creating` from registration until its actor has
started whole (create, fork, image import), so a creation cut short never leaves a memory that
looks whole but holds the wrong state.

A creation that fails is cleared at once: actor, checkpoint objects, then the record (only if
it still carries this attempt's mark). When the clean-up itself fails (Redis restarting), it
is retried in the background until it lands; meanwhile the name answers 503 busy, and this
process clears the record at once on the next create under it. A record whose creator died
with it is cleared by the next create under its name once it is older than any creation can
take (`stale_after`), and by the sweep every gateway runs that often, whichever comes first.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

from errors import Busy, MemoryExists, MemoryNotFound, MetadataError, QuotaExceeded
from storage import shown

if TYPE_CHECKING:
    from cluster.cluster import MemoryCluster

__all__ = ["Creations"]

log = logging.getLogger(__name__)

CLEANUP_RETRY_SECONDS = 2.0
# How long a call that finds its name being created by another waits for that creation to end
# (a cold start takes seconds), so of two concurrent creates one is 201 and the other 409, not
# 503; past it, still Busy.
OTHER_CREATION_WAIT_SECONDS = 30.0
# Waits between tries of the last step while Redis is away (~10 s: a restart takes about one)
FINISH_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0)


class Creations:
    def __init__(self, cluster: "MemoryCluster") -> None:
        self._cluster = cluster
        self._id = uuid.uuid4().hex  # names this process's claim on a record it clears
        self._cut_short: set[str] = set()  # attempts of this process whose clean-up is pending
        self._cleanups: set[asyncio.Task] = set()
        self._clearing: dict[str, asyncio.Lock] = {}  # one clean-up per name at a time (failures only)
        self._sweeper: asyncio.Task | None = None

    @property
    def deadline(self) -> float:
        """Seconds a creation may take before it is undone (the caller's `_create_seeded`)."""
        return 2 * self._cluster.settings.actor_start_timeout

    # Seconds a creation undone at its deadline waits for a step it cannot cancel (a seed
    # thread writing the first checkpoint) before its clean-up (`abandon`).
    settle_seconds = 30.0

    @property
    def stale_after(self) -> float:
        """Seconds after which a record still marked `creating` has no live creator: a
        creation is undone before then (`deadline`, then `settle_seconds`), with a minute's
        margin for its registration and clean-up."""
        return self.deadline + self.settle_seconds + 60

    async def register(self, record: dict, tenant_limit: int) -> dict:
        """Register `record` marked as being created; the record as stored (its `creating`
        mark names the attempt). MemoryExists if the name is taken, Busy while another
        creation holds it, QuotaExceeded if its tenant already has `tenant_limit` memories."""
        qname = record["name"]
        marked = {**record, "creating": {"attempt": uuid.uuid4().hex, "since": time.time()}}
        try:
            for _ in range(2):  # the second time after a creation cut short is cleared
                try:
                    return await self._cluster._meta("create_memory", qname, marked, tenant_limit=tenant_limit)
                except MemoryExists:  # say by what; or a resend of ours that landed
                    mine = await self._taken_by(qname, marked["creating"]["attempt"])
                    if mine:
                        return mine
            raise Busy(f"memory {shown(qname)} was being cleared by another call: retry shortly")
        except (MemoryExists, Busy, QuotaExceeded):
            raise
        except BaseException:
            # Redis may have stored the record and lost the answer: clear it if it is this
            # attempt's (an unowned mark would hold the name until it is stale).
            await self.abandon(marked)
            raise

    async def check_free(self, qname: str, hint: str = "") -> None:
        """MemoryExists if `qname` is a memory, Busy while a creation holds it; a creation of
        this process cut short, or one older than `stale_after`, is cleared here."""
        await self._taken_by(qname, None, hint)

    async def _taken_by(self, qname: str, attempt: str | None, hint: str = "") -> dict | None:
        """`qname`'s record if `attempt` is creating it (its first create landed, the answer was
        lost); None if the name is free, or freed here of a creation without a creator. While
        another creation holds the name, waits for it to end (OTHER_CREATION_WAIT_SECONDS)."""
        loop = asyncio.get_running_loop()
        give_up, delay = loop.time() + OTHER_CREATION_WAIT_SECONDS, 0.05
        while True:
            try:
                return await self._taken_now(qname, attempt, hint)
            except Busy:
                if loop.time() + delay > give_up:
                    raise
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)

    async def _taken_now(self, qname: str, attempt: str | None, hint: str) -> dict | None:
        """`_taken_by`, without waiting: Busy while another creation holds the name."""
        record = await self._record(qname)
        if not record:
            return None
        creating = record.get("creating")
        if not creating:
            raise MemoryExists(f"memory {shown(qname)} already exists{hint}")
        if creating["attempt"] == attempt:
            return record
        if not self._abandoned(creating):
            raise Busy(f"memory {shown(qname)} is being created by another call; if that creation fails the "
                       f"name is freed: {self._retry_hint(creating)}")
        log.warning("clearing %s, a creation cut short (attempt %s)", qname, creating["attempt"])
        await self._clear(qname, creating["attempt"])
        return None

    async def is_whole(self, qname: str) -> bool:
        """Whether `qname` is a memory to serve: False if it is not registered, or is a creation
        cut short; Busy while it is being created (its actor must not start from the config
        before its state is written)."""
        record = await self._record(qname)
        creating = record.get("creating")
        if not creating:
            return bool(record)
        if self._abandoned(creating):
            return False
        raise Busy(f"memory {shown(qname)} is being created (a create, fork or import still running): "
                   f"{self._retry_hint(creating)}")

    def _retry_hint(self, creating: dict) -> str:
        """When to come back: soon, or, if the creation's server died with it (its mark then
        waits out `stale_after`), at the latest when its mark is cleared."""
        left = max(0.0, self.stale_after - (time.time() - float(creating["since"])))
        return (f"retry shortly (if the server creating it was stopped, the name is freed within "
                f"{left:.0f} s)")

    def listed(self, records: list[dict]) -> list[dict]:
        """`records` as a listing shows them: a creation cut short is left out (it is cleared by
        the next create or delete of its name), one still running is `being_created`."""
        return [{**record, "being_created": bool(record.get("creating"))} for record in records
                if self._abandoned_attempt(record) is None]

    async def _record(self, qname: str) -> dict:
        """`qname`'s registry record; {} if there is none."""
        try:
            return await self._cluster._meta("get_memory", qname)
        except MemoryNotFound:
            return {}

    def _abandoned(self, creating: dict) -> bool:
        """Whether a creation's mark has no live creator: cut short in this process, or stale."""
        return creating["attempt"] in self._cut_short or self._stale(creating)

    def _stale(self, creating: dict) -> bool:
        """Older than any creation (or clean-up claim) lasts."""
        return time.time() - float(creating["since"]) >= self.stale_after

    async def finish(self, registered: dict) -> None:
        """Drop the mark. Retried while Redis is away (the swap is idempotent): a swap that
        landed with its answer lost must not fail a creation that is whole."""
        for delay in (*FINISH_RETRY_DELAYS, None):
            try:
                await self._cluster._meta("finish_creating", registered["name"], registered)
                return
            except MetadataError:
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def abandon(self, registered: dict, pending: asyncio.Future | None = None) -> None:
        """Clear a failed creation; if that fails too, keep trying in the background. `pending`:
        a step that cannot be cancelled (the seed thread writing the first checkpoint). It is
        waited for, up to `settle_seconds` here and then in the background, before anything
        is cleared: the name stays busy until then, so the checkpoint never lands in the next
        memory of that name."""
        qname, attempt = registered["name"], registered["creating"]["attempt"]
        if pending is not None and not pending.done():
            await asyncio.wait({pending}, timeout=self.settle_seconds)
            if not pending.done():
                log.warning("%s: clearing a creation cut short once its seed has finished", qname)
                self._in_background(self._abandon_after(pending, registered))
                return
        try:
            await self._clear(qname, attempt)
        except Exception as exc:  # noqa: BLE001 - the creation's own error is what the caller sees
            log.warning("could not clear %s after its creation failed (%r); retrying in the background",
                        qname, exc)
            self._cut_short.add(attempt)
            self._in_background(self._clear_later(qname, attempt))

    def _in_background(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _abandon_after(self, pending: asyncio.Future, registered: dict) -> None:
        await asyncio.wait({pending})
        await self.abandon(registered)

    async def clear_abandoned(self, qname: str) -> None:
        """Clear `qname` if it is a creation cut short (for a delete); Busy, saying when to come
        back, while it is still being created."""
        record = await self._record(qname)
        attempt = self._abandoned_attempt(record)
        if attempt is None:
            creating = record.get("creating")
            hint = self._retry_hint(creating) if isinstance(creating, dict) else "retry shortly"
            raise Busy(f"memory {shown(qname)} is being created (a create, fork or import still running); "
                       f"delete it once that has answered: {hint}")
        await self._clear(qname, attempt)

    def _abandoned_attempt(self, record: dict) -> str | None:
        """The attempt of `record`'s creation if it has no live creator (see `_abandoned`)."""
        creating = record.get("creating")
        return creating["attempt"] if isinstance(creating, dict) and self._abandoned(creating) else None

    async def sweep(self) -> list[str]:
        """Clear every creation whose creator died (its mark stale) or whose clean-up is pending
        here; the names this call cleared. Their names otherwise hold a quota slot and their
        objects until someone creates or deletes them."""
        cleared = []
        for record in await self._cluster._meta("records_being_created"):
            attempt = self._abandoned_attempt(record)
            try:
                if attempt is not None and await self._clear(record["name"], attempt):
                    cleared.append(record["name"])
            except Exception as exc:  # noqa: BLE001 - Redis or the store: the next round tries again
                log.info("sweep: could not clear %s (%r)", record["name"], exc)
        return cleared

    def start_sweeping(self) -> None:
        """Sweep every `stale_after` seconds until `close` (gateways race harmlessly: a record
        is claimed before it is cleared)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.stale_after)
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - Redis away: the next round tries again
                log.info("sweep of creations cut short failed (%r)", exc)

    def close(self) -> None:
        for task in self._cleanups:
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _clear_later(self, qname: str, attempt: str) -> None:
        deadline = time.monotonic() + self.stale_after
        while attempt in self._cut_short and time.monotonic() < deadline:
            await asyncio.sleep(CLEANUP_RETRY_SECONDS)
            try:
                await self._clear(qname, attempt)
            except Exception as exc:  # noqa: BLE001 - Redis, the supervisor or the store: try again
                log.info("clearing %s: still failing (%r)", qname, exc)

    async def _clear(self, qname: str, attempt: str) -> bool:
        """The attempt's actor and checkpoint objects, then its record, if the record is still
        that attempt's. The record is claimed first, in one swap, so of two clearers (two
        gateways taking over a stale mark) only one goes on; in this process they take turns.
        The name is not free before the record goes, so no later memory's actor or objects
        are released here. True if this call released them."""
        cluster = self._cluster
        async with self._clearing.setdefault(qname, asyncio.Lock()):
            record = await self._record(qname)
            creating = record.get("creating") or {}
            if creating.get("attempt") != attempt:  # gone, or a later memory's
                self._cut_short.discard(attempt)
                return False
            if creating.get("cleared_by") != self._id:
                if creating.get("cleared_by") and not self._stale(creating):
                    return False  # another process is clearing it
                claimed = {**record, "creating": {**creating, "cleared_by": self._id, "since": time.time()}}
                try:
                    await cluster._meta("replace_record", qname, record, claimed)
                except MemoryNotFound:
                    return False  # another clearer claimed it first
            await cluster._release(qname)
            try:
                await cluster._meta("delete_memory", qname, creating=attempt)
            except MemoryNotFound:
                pass  # gone already
            self._cut_short.discard(attempt)
            return True
