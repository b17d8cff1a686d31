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


def collect_once(settings: StorageSettings, grace_seconds: float, *, dry_run: bool = False) -> GcReport:
    """One collection against the storage `settings` name; with the embedded default, against
    the Valkey a running server already holds (if any)."""
    if settings.redis_url is None:
        url = running_url(settings.valkey_dir.expanduser())
        if url is not None:
            settings = settings.model_copy(update={"redis_url": url})
    with open_storage(settings) as storage:
        return GarbageCollector(storage.content).run(grace_seconds, dry_run=dry_run)


async def run_collector(settings: StorageSettings, interval: float, grace_seconds: float) -> None:
    """Collect every `interval` seconds until cancelled; a failed round is logged and retried."""
    storage = await asyncio.to_thread(open_storage, settings)
    collector = GarbageCollector(storage.content)
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(collector.run, grace_seconds)
            except Exception:  # noqa: BLE001 - the collector must outlive one bad round
                log.exception("checkpoint garbage collection failed; retrying in %.0fs", interval)
    finally:
        await asyncio.to_thread(storage.close)
