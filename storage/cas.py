"""Content-addressed checkpoints: a small manifest naming parts, each stored as chunks by sha256.

    content = ContentStore(objects, metadata)
    info = content.write("acme/notes/auto@1-ab12.ckpt", {"state": blob})  # key, sha256, size, stored
    content.read(info["key"], info["sha256"])                             # {"state": blob}
    content.copy(info["key"], info["sha256"], "acme/fork/auto@1-cd34.ckpt")   # a fork: one manifest

A checkpoint object (same keys as always) is either
  - format 1, one blob (what checkpoints were before this module): read as the single part
    named LEGACY_PART; or
  - format 2, a manifest: MAGIC + JSON {"format": 2, "parts": [{"name", "sha256", "size",
    "chunks": [[sha256, size], ...]}]}, each part's bytes being its chunks in order.
Chunks are objects "_chunks/<sha[:2]>/<sha>" (framed and verified on read like every object).
Parts are cut by content (FastCDC, 128 KiB average), so a part changed in one place keeps its
other chunks. Measured on the state of a default memory after 5,000 observations (20.7 MB,
3,483 patterns), the state one observation later adds 5.1 MB of new chunks, 4.2 MB of which are
the network's weights and momentum (every observation changes them all); 256 KiB chunks add
6.0 MB, 64 KiB ones 4.7 MB at twice the objects; fixed-size chunks share nothing (the header in
front of the tensors grows, shifting every offset). A fork of a checkpoint is one new manifest naming the same chunks.

Garbage collection (storage/gc.py) deletes chunks that no manifest in the store names. Writers
upload chunks before their manifest exists and reuse chunks that exist, possibly one the
collector is about to delete; so a writer first *claims* its chunks in Redis (chunk -> server
time), and the collector deletes a chunk only after atomically marking it *doomed*, which it
may do only if the chunk has no claim newer than (collection start - grace):
  - claim, then doom: the doom sees the claim and spares the chunk;
  - doom, then claim: the claim reports the chunk busy; the writer waits until the collector
    is done with it, claims it again and uploads it anew.
A writer that took longer than REFRESH_CLAIMS_AFTER claims its chunks again (and re-checks
they exist) before writing its manifest, so any grace >= 60 s covers it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from pyfastcdc import FastCDC

from errors import CheckpointConflict, CheckpointCorrupt, CheckpointNotFound, Unavailable
from storage.checkpoints import CheckpointStore
from storage.content_index import STALE_DOOM_SECONDS

if TYPE_CHECKING:
    from storage.metadata import MetadataStore

__all__ = ["ContentStore", "Manifest", "Stored", "MAGIC", "LEGACY_PART", "CHUNK_PREFIX", "chunk_key",
           "parse_manifest", "REFRESH_CLAIMS_AFTER"]

MAGIC = b"NMMF"
FORMAT = 2
LEGACY_PART = "state"  # the one part of a format-1 checkpoint
CHUNK_PREFIX = "_chunks/"
AVG_CHUNK = 128 * 1024
REFRESH_CLAIMS_AFTER = 30.0  # seconds; the GC grace must be longer (settings enforce >= 60)
_WORKERS = 8


def chunk_key(sha: str) -> str:
    return f"{CHUNK_PREFIX}{sha[:2]}/{sha}"


def _sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    parts: list[dict]  # [{"name", "sha256", "size", "chunks": [[sha256, size], ...]}]

    def chunk_shas(self) -> set[str]:
        return {sha for part in self.parts for sha, _size in part["chunks"]}

    def to_bytes(self) -> bytes:
        return MAGIC + json.dumps({"format": FORMAT, "parts": self.parts}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Stored:
    """A checkpoint found in the store, its parts not fetched yet: `content_id` names its bytes
    (equal ids, equal parts), so a reader that already holds them can skip the fetch."""

    key: str
    content_id: str
    fetch: Callable[[], dict[str, bytes]]

    def parts(self) -> dict[str, bytes]:
        return self.fetch()


def parse_manifest(payload: bytes, where: str) -> Manifest | None:
    """The manifest in a checkpoint object's payload; None for a format-1 blob."""
    if payload[:4] != MAGIC:
        return None
    try:
        doc = json.loads(payload[4:])
        parts = doc["parts"]
        ok = doc.get("format") == FORMAT and all(
            isinstance(p["name"], str) and isinstance(p["size"], int) and len(p["sha256"]) == 64
            and all(len(sha) == 64 and isinstance(size, int) for sha, size in p["chunks"]) for p in parts)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointCorrupt(f"checkpoint manifest {where} is unreadable: {exc}") from None
    if not ok:
        raise CheckpointCorrupt(f"checkpoint manifest {where} has format {doc.get('format')!r} "
                                f"or malformed parts (this build reads format {FORMAT})")
    return Manifest(parts)


def _cut(data: bytes) -> list[tuple[str, bytes]]:
    view = memoryview(data)
    if len(view) <= AVG_CHUNK:
        return [(_sha(view), bytes(view))] if len(view) else []
    out = []
    for chunk in FastCDC(avg_size=AVG_CHUNK).cut_buf(view):
        piece = bytes(view[chunk.offset:chunk.offset + chunk.length])
        out.append((_sha(piece), piece))
    return out


class ContentStore:
    """Checkpoints as manifests over shared chunks, on any CheckpointStore plus Redis claims."""

    def __init__(self, objects: CheckpointStore, metadata: MetadataStore) -> None:
        self.objects = objects
        self.metadata = metadata
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _map(self, fn, items: Iterable) -> list:
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="chunks")
        return list(self._pool.map(fn, items))

    # ---- write ------------------------------------------------------------------------------

    def write(self, key: str, parts: dict[str, bytes]) -> dict:
        """Store `parts` as a manifest at `key` (create-only): {key, sha256 (of the manifest
        object), size (the parts' bytes), stored (bytes new to the store)}."""
        entries, chunks = [], {}
        for name, data in parts.items():
            cut = _cut(data)
            entries.append({"name": name, "sha256": _sha(data), "size": len(data),
                            "chunks": [[sha, len(piece)] for sha, piece in cut]})
            chunks.update(cut)
        began = self._claim(list(chunks))
        stored = sum(self._map(lambda item: self._put_chunk(*item), chunks.items()))
        if self.metadata.server_time() - began > REFRESH_CLAIMS_AFTER:
            self._claim(list(chunks))
            stored += sum(self._map(lambda item: self._put_chunk(*item), chunks.items()))
        return self._put_manifest(key, Manifest(entries), stored)

    def copy(self, source_key: str, sha256: str | None, key: str) -> dict:
        """A new manifest at `key` naming the same parts as checkpoint `source_key` (a format-1
        source is rewritten as parts once)."""
        payload = self.objects.get(source_key, sha256)
        manifest = parse_manifest(payload, source_key)
        if manifest is None:
            return self.write(key, {LEGACY_PART: payload})
        shas = sorted(manifest.chunk_shas())
        self._claim(shas)
        # The source still existing after our claim proves no collector could delete its chunks
        # since; otherwise check them one by one.
        if not self.objects.exists(source_key):
            missing = [sha for sha, ok in zip(shas, self._map(self._chunk_exists, shas)) if not ok]
            if missing:
                raise CheckpointNotFound(f"checkpoint {source_key} was deleted while being copied; retry")
        return self._put_manifest(key, manifest, 0)

    def _put_manifest(self, key: str, manifest: Manifest, stored: int) -> dict:
        data = manifest.to_bytes()
        info = self.objects.put(key, data)
        return {"key": key, "sha256": info["sha256"], "size": sum(p["size"] for p in manifest.parts),
                "stored": stored + len(data)}

    def _claim(self, shas: list[str]) -> float:
        """Claim every chunk, waiting out those a collector is deleting; the first claim's time."""
        began, busy = self.metadata.cas_claim(shas)
        deadline = time.monotonic() + STALE_DOOM_SECONDS + 60
        while busy:
            if time.monotonic() > deadline:
                raise Unavailable("garbage collection holds chunks of this checkpoint for too long; retry")
            time.sleep(0.05)
            _, busy = self.metadata.cas_claim(busy)
        return began

    def _chunk_exists(self, sha: str) -> bool:
        return self.objects.exists(chunk_key(sha))

    def _put_chunk(self, sha: str, data: bytes) -> int:
        """Bytes written: 0 if the chunk is there already (its name is its content)."""
        if self._chunk_exists(sha):
            return 0
        try:
            self.objects.put(chunk_key(sha), data)
        except CheckpointConflict:  # another writer stored the same bytes first
            return 0
        return len(data)

    # ---- read -------------------------------------------------------------------------------

    def read(self, key: str, sha256: str | None = None) -> dict[str, bytes]:
        """The parts of checkpoint `key` ({LEGACY_PART: blob} for format 1), each verified."""
        return self.open(key, sha256).parts()

    def open(self, key: str, sha256: str | None = None) -> Stored:
        """Checkpoint `key` with what names its content (its parts' names and sha256, or a
        format-1 blob's sha256); the chunks are fetched by `parts()`."""
        payload = self.objects.get(key, sha256)
        manifest = parse_manifest(payload, key)
        if manifest is None:
            return Stored(key, _sha(payload), lambda: {LEGACY_PART: payload})
        names = json.dumps([[p["name"], p["sha256"]] for p in manifest.parts]).encode()
        return Stored(key, _sha(names), lambda: self._assemble(key, manifest))

    def _assemble(self, key: str, manifest: Manifest) -> dict[str, bytes]:
        shas = sorted(manifest.chunk_shas())
        chunks = dict(zip(shas, self._map(lambda sha: self._get_chunk(key, sha), shas)))
        parts = {}
        for part in manifest.parts:
            data = b"".join(chunks[sha] for sha, _size in part["chunks"])
            if len(data) != part["size"] or _sha(data) != part["sha256"]:
                raise CheckpointCorrupt(f"part {part['name']!r} of checkpoint {key} does not match "
                                        "its manifest (size or sha256)")
            parts[part["name"]] = data
        return parts

    def manifest(self, key: str) -> Manifest | None:
        """The manifest at `key` (None for a format-1 blob)."""
        return parse_manifest(self.objects.get(key), key)

    def _get_chunk(self, key: str, sha: str) -> bytes:
        try:
            return self.objects.get(chunk_key(sha), sha)
        except CheckpointNotFound:
            raise CheckpointCorrupt(f"checkpoint {key} names chunk {sha[:16]}..., which is missing") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
