"""Checkpoint garbage collection, run by the supervisor every `gc_interval_seconds`.

The work is storage/gc.py's (safe beside writers; one collector at a time across supervisors
sharing the storage); this is the loop around it, plus `collect_once` for `neural-memory gc`.
"""

from __future__ import annotations

import asyncio
import logging

from storage import StorageSettings, open_storage
from storage.embedded import running_url
from storage.gc import GarbageCollector, GcReport

__all__ = ["run_collector", "collect_once"]

log = logging.getLogger(__name__)

# A forget holds the collector lock while it deletes what it erased (seconds each): under a
# stream of forgets a round that found it held runs again this soon, not a whole interval on.
ROUND_AFTER_BUSY_SECONDS = 30.0


def collect_once(settings: StorageSettings, grace_seconds: float, *, dry_run: bool = False,
                 wait_seconds: float = 0.0) -> GcReport:
    """One collection against the storage `settings` name; with the embedded default, against
    the Valkey a running server already holds (if any). While another collection holds the
    lock it waits up to `wait_seconds` (then the report says it did not run)."""
    if settings.redis_url is None:
        url = running_url(settings.valkey_dir.expanduser())
        if url is not None:
            settings = settings.model_copy(update={"redis_url": url})
    with open_storage(settings) as storage:
        return GarbageCollector(storage.content).run(grace_seconds, dry_run=dry_run, wait_seconds=wait_seconds)


async def run_collector(settings: StorageSettings, interval: float, grace_seconds: float) -> None:
    """Collect every `interval` seconds until cancelled; a failed round is logged and retried,
    a round that found the lock held (a forget deleting what it erased) runs again in
    ROUND_AFTER_BUSY_SECONDS (sleeping a whole interval let the store grow by gigabytes)."""
    storage = await asyncio.to_thread(open_storage, settings)
    collector = GarbageCollector(storage.content)
    pause = interval
    try:
        while True:
            await asyncio.sleep(pause)
            pause = interval
            try:
                report = await asyncio.to_thread(collector.run, grace_seconds)
            except Exception:  # noqa: BLE001 - the collector must outlive one bad round
                log.exception("checkpoint garbage collection failed; retrying in %.0fs", interval)
                continue
            if not report.ran:
                pause = min(interval, ROUND_AFTER_BUSY_SECONDS)
    finally:
        await asyncio.to_thread(storage.close)
