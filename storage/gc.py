"""Garbage collection of the content store: delete the chunks that no manifest names.

    report = GarbageCollector(storage.content).run(grace_seconds=900)

Mark: list every object; read every manifest and collect the chunks it names (cached by key:
objects are create-only under unique keys, so a key's manifest never changes). Sweep: each
chunk named by none is doomed, unless claimed since (start - grace), then deleted and its
marks forgotten (why this is safe beside writers: storage/cas.py). One collector runs at a
time (a lock in Redis that expires if its holder dies). The supervisor runs it every
`gc_interval_seconds`; `neural-memory gc` runs it by hand.

Not collected: a manifest whose index entry was never written (its writer died between the
two writes); it is a few KB and keeps its chunks alive.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from errors import CheckpointCorrupt, CheckpointNotFound, InvalidInput
from storage.cas import CHUNK_PREFIX, REFRESH_CLAIMS_AFTER, ContentStore, chunk_key, parse_manifest
from storage.keys import SEGMENT_SUFFIX

__all__ = ["GarbageCollector", "GcReport", "MIN_GRACE_SECONDS"]

log = logging.getLogger(__name__)

MIN_GRACE_SECONDS = 60.0  # must exceed storage.cas.REFRESH_CLAIMS_AFTER
# The collector lock is a lease its holder renews every LOCK_RENEW_SECONDS while it works: a
# holder killed mid-way (a process stopped while its forget swept) blocks the next one for at
# most LOCK_SECONDS, not an hour.
LOCK_SECONDS = 60
LOCK_RENEW_SECONDS = 15.0


@contextmanager
def collector_lock(meta, wait_seconds: float = 0.0) -> Iterator[bool]:
    """The one-collector-at-a-time lock, renewed while held: yields whether it was taken
    (waiting up to `wait_seconds` for a running collection)."""
    token, deadline = uuid.uuid4().hex, time.monotonic() + wait_seconds
    while not meta.gc_lock(token, LOCK_SECONDS):
        if time.monotonic() >= deadline:
            yield False
            return
        time.sleep(0.2)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LOCK_RENEW_SECONDS):
            try:
                if not meta.gc_renew(token, LOCK_SECONDS):
                    log.error("the checkpoint collector lock expired while held (Redis away over %d s)",
                              LOCK_SECONDS)
                    return
            except Exception as exc:  # noqa: BLE001 - Redis away a moment: try again next period
                log.warning("could not renew the checkpoint collector lock: %s", exc)

    renewer = threading.Thread(target=renew, name="gc-lock", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        meta.gc_unlock(token)


@dataclass
class GcReport:
    ran: bool  # False: another collector holds the lock (`busy` says for how long at most)
    objects: int = 0  # checkpoint objects (manifests and format-1 blobs) seen
    chunks: int = 0  # chunks in the store before the sweep
    referenced: int = 0  # chunks some manifest names
    unreferenced: int = 0  # chunks no manifest names
    deleted: int = 0  # chunks deleted (a dry run: those it would delete)
    spared: int = 0  # unreferenced chunks kept because a writer claimed them recently
    dry_run: bool = False  # nothing was deleted
    unreadable: int = 0  # manifests that could not be read: nothing is deleted then
    unreadable_keys: list[str] = field(default_factory=list)  # which (the first 20)
    seconds: float = 0.0
    busy: str = ""  # why it did not run


    def as_dict(self) -> dict:
        return asdict(self)


class GarbageCollector:
    """Collects one content store; keep it to reuse its manifest cache between runs."""

    def __init__(self, content: ContentStore) -> None:
        self.content = content
        self._named: dict[str, frozenset[str]] = {}  # object key -> chunks its manifest names

    def run(self, grace_seconds: float, *, dry_run: bool = False, wait_seconds: float = 0.0) -> GcReport:
        """Collect, unless another collection (a GC run, or a forget deleting what it erased)
        holds the lock for longer than `wait_seconds`: then `ran` is False and `busy` says why."""
        if not (isinstance(grace_seconds, (int, float)) and math.isfinite(grace_seconds) and grace_seconds >= 0):
            raise InvalidInput(f"the GC grace must be a number of seconds, got {grace_seconds!r}")
        if grace_seconds < MIN_GRACE_SECONDS:  # a dry run too: it counts what the same run would delete
            raise InvalidInput(f"the GC grace must be at least {MIN_GRACE_SECONDS:.0f} seconds, got {grace_seconds:g}: "
                               "a checkpoint being written renews its chunks' claims every "
                               f"{REFRESH_CLAIMS_AFTER:.0f} s, and a shorter grace could delete them under it")
        meta = self.content.metadata
        with collector_lock(meta, wait_seconds) as held:
            if held:
                return self._collect(grace_seconds, dry_run)
        ttl = meta.gc_holder_ttl()
        return GcReport(ran=False, dry_run=dry_run,
                        busy="another collection (a GC run, or a forget deleting what it erased) holds the "
                             "lock" + (f"; it is free in at most {ttl} s if its holder has stopped" if ttl else ""))

    def _collect(self, grace_seconds: float, dry_run: bool) -> GcReport:
        began = time.monotonic()
        meta, objects = self.content.metadata, self.content.objects
        start = meta.server_time()
        keys = objects.list("")
        chunks = {key.rsplit("/", 1)[1]: key for key in keys if key.startswith(CHUNK_PREFIX)}
        manifests = _manifests(keys)
        referenced: set[str] = set()
        report = GcReport(ran=True, objects=len(manifests), chunks=len(chunks), dry_run=dry_run)
        for key in manifests:
            try:
                referenced |= self._chunks_named_by(key)
            except CheckpointCorrupt as exc:  # its chunks are unknown: delete nothing this round
                log.error("checkpoint GC cannot read %s (%s); sweeping nothing", key, exc)
                report.unreadable += 1
                report.unreadable_keys = (report.unreadable_keys + [key])[:20]
        alive = set(manifests)
        self._named = {k: v for k, v in self._named.items() if k in alive}
        orphans = sorted(set(chunks) - referenced)
        report.referenced, report.unreferenced = len(referenced & set(chunks)), len(orphans)
        if orphans and not report.unreadable:
            if dry_run:
                doomed = sorted(set(orphans) - meta.cas_claimed_since(orphans, start - grace_seconds))
            else:
                doomed = meta.cas_doom(orphans, start - grace_seconds)
                for sha in doomed:
                    objects.delete(chunks[sha])
                meta.cas_forget(doomed)
                meta.cas_prune_claims(start - grace_seconds)
            report.deleted, report.spared = len(doomed), len(orphans) - len(doomed)
        report.seconds = round(time.monotonic() - began, 3)
        log.info("checkpoint GC: %s", report.as_dict())
        return report

    def sweep(self, candidates: set[str], claimed_before: float, holding: list[bytes] = (),
              wait_seconds: float = 60.0) -> dict:
        """Delete now those of `candidates` (chunk sha256s) that no manifest names any more: a
        forget job's old checkpoints held them, and their bytes hold what was forgotten; so do
        unreferenced chunks (e.g. of auto-checkpoints pruned before) whose bytes hold one of
        `holding`. Spares chunks claimed at or after `claimed_before` (a writer may be about to
        name them) and deletes nothing if a manifest cannot be read. Waits up to `wait_seconds`
        for a running collection. Returns {"deleted": [sha...], "left": [sha...], "ran": bool}
        (False: nothing was swept, the lock was held all along or a manifest was unreadable)."""
        with collector_lock(self.content.metadata, wait_seconds) as held:
            if not held:
                return {"deleted": [], "left": sorted(candidates), "ran": False}
            return self._sweep(candidates, claimed_before, holding)

    def _sweep(self, candidates: set[str], claimed_before: float, holding: list[bytes]) -> dict:
        meta, objects = self.content.metadata, self.content.objects
        try:
            referenced: set[str] = set()
            keys = objects.list("")
            for key in _manifests(keys):
                referenced |= self._chunks_named_by(key)
            unnamed = {key.rsplit("/", 1)[1] for key in keys if key.startswith(CHUNK_PREFIX)} - referenced
            candidates = set(candidates) | {sha for sha in unnamed - set(candidates)
                                            if holding and _holds(objects.get(chunk_key(sha)), holding)}
            orphans = sorted(candidates - referenced)
            doomed = meta.cas_doom(orphans, claimed_before)
            for sha in doomed:
                objects.delete(chunk_key(sha))
            meta.cas_forget(doomed)
            return {"deleted": doomed, "left": sorted(candidates - set(doomed)), "ran": True}
        except CheckpointCorrupt as exc:
            log.error("chunk sweep cannot read a manifest (%s); nothing swept (its caller tries again)", exc)
            return {"deleted": [], "left": sorted(candidates), "ran": False}

    def _chunks_named_by(self, key: str) -> frozenset[str]:
        named = self._named.get(key)
        if named is None:
            try:
                manifest = parse_manifest(self.content.objects.get(key), key)
            except CheckpointNotFound:  # deleted since the listing: names nothing any more
                return frozenset()
            named = frozenset() if manifest is None else frozenset(manifest.chunk_shas())
            self._named[key] = named
        return named


def _manifests(keys: list[str]) -> list[str]:
    """The checkpoint objects among `keys` (not chunks, not archived log segments)."""
    return [key for key in keys if not key.startswith(CHUNK_PREFIX) and not key.endswith(SEGMENT_SUFFIX)]


def _holds(data: bytes, needles: list[bytes]) -> bool:
    return any(needle in data for needle in needles)
