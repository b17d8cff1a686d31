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
A part is stored whole, as one chunk: a memory's parts are one small mutable `head` (network
weights and momentum, which every observation changes entirely, plus recent records) and
immutable episode segments (the same name always holds the same bytes), so whole parts already
share everything that did not change. Measured on a default memory after 5,000 observations
(head 5.2 MB, four 0.9 MB segments): a checkpoint one observation later adds 5.2 MB with whole
parts and 4.8 MB with 128 KiB content-defined chunks, 200 observations later 5.4 vs 5.2 MB: not
worth a dozen times the objects. The manifest keeps a chunk list per part, so a part could be
cut later without a new format. A fork of a checkpoint is one new manifest naming the same
chunks. Chunks fetched are kept in memory by sha256 (`cache_bytes`): waking a fork of a base
this process loaded before reads no object but the manifest.

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
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from errors import CheckpointConflict, CheckpointCorrupt, CheckpointNotFound, Unavailable
from storage.checkpoints import CheckpointStore
from storage.content_index import STALE_DOOM_SECONDS

if TYPE_CHECKING:
    from storage.metadata import MetadataStore

__all__ = ["ContentStore", "ChunkCache", "Manifest", "MAGIC", "LEGACY_PART", "CHUNK_PREFIX", "chunk_key",
           "parse_manifest", "REFRESH_CLAIMS_AFTER"]

MAGIC = b"NMMF"
FORMAT = 2
LEGACY_PART = "state"  # the one part of a format-1 checkpoint
CHUNK_PREFIX = "_chunks/"
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
    """A part's chunks: the part itself (see the module doc for why)."""
    return [(_sha(data), bytes(data))]


class ChunkCache:
    """Chunk bytes by sha256, least recently used out first, up to `max_bytes` (0: off). The
    name is the content, so a kept chunk is exactly what the store would return."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, sha: str) -> bytes | None:
        with self._lock:
            data = self._kept.get(sha)
            if data is not None:
                self._kept.move_to_end(sha)
            return data

    def put(self, sha: str, data: bytes) -> None:
        if len(data) > self._max:
            return
        with self._lock:
            if sha not in self._kept:
                self._kept[sha] = data
                self._size += len(data)
            while self._size > self._max:
                _sha_out, out = self._kept.popitem(last=False)
                self._size -= len(out)


class ContentStore:
    """Checkpoints as manifests over shared chunks, on any CheckpointStore plus Redis claims."""

    def __init__(self, objects: CheckpointStore, metadata: MetadataStore, cache_bytes: int = 0) -> None:
        self.objects = objects
        self.metadata = metadata
        self.cache = ChunkCache(cache_bytes)
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
        payload = self.objects.get(key, sha256)
        manifest = parse_manifest(payload, key)
        return {LEGACY_PART: payload} if manifest is None else self._assemble(key, manifest)

    def _assemble(self, key: str, manifest: Manifest) -> dict[str, bytes]:
        shas = sorted(manifest.chunk_shas())
        chunks = dict(zip(shas, self._map(lambda sha: self._get_chunk(key, sha), shas)))
        parts = {}
        for part in manifest.parts:
            names = [sha for sha, _size in part["chunks"]]
            data = chunks[names[0]] if len(names) == 1 else b"".join(chunks[sha] for sha in names)
            # A one-chunk part named by its own sha256 was verified as that chunk was read.
            verified = names == [part["sha256"]]
            if len(data) != part["size"] or (not verified and _sha(data) != part["sha256"]):
                raise CheckpointCorrupt(f"part {part['name']!r} of checkpoint {key} does not match "
                                        "its manifest (size or sha256)")
            parts[part["name"]] = data
        return parts

    def manifest(self, key: str) -> Manifest | None:
        """The manifest at `key` (None for a format-1 blob)."""
        return parse_manifest(self.objects.get(key), key)

    def _get_chunk(self, key: str, sha: str) -> bytes:
        data = self.cache.get(sha)
        if data is not None:
            return data
        try:
            data = self.objects.get(chunk_key(sha), sha)
        except CheckpointNotFound:
            raise CheckpointCorrupt(f"checkpoint {key} names chunk {sha[:16]}..., which is missing") from None
        self.cache.put(sha, data)
        return data

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
