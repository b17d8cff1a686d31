"""Content-addressed checkpoints (storage/cas.py) and their garbage collection (storage/gc.py),
on the local store and on S3 (weed), with the session Valkey for claims."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator

import pytest

from errors import CheckpointConflict, CheckpointCorrupt, InvalidInput
from storage import MetadataStore
from storage.cas import CHUNK_PREFIX, LEGACY_PART, ContentStore, chunk_key
from storage.gc import GarbageCollector
from tests.storage.conftest import CheckpointBackend, _local_backend, _s3_backend, failures_in_threads

GRACE = 60.0
KB = 1024


def random_parts(*names: str, size: int = 64 * KB) -> dict[str, bytes]:
    return {name: os.urandom(size) for name in names}


@pytest.fixture(params=["local", "s3-seaweedfs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, storage_namespace: str) -> Iterator[CheckpointBackend]:
    if request.param == "local":
        backend = _local_backend(tmp_path / "checkpoints")
    else:
        backend = _s3_backend(request.param, request.getfixturevalue("s3_server"), storage_namespace)
    yield backend
    backend.store.close()


@pytest.fixture
def meta(valkey_url: str, storage_namespace: str) -> Iterator[MetadataStore]:
    store = MetadataStore(valkey_url, prefix=storage_namespace)
    yield store
    for key in store.client.scan_iter(match=f"{storage_namespace}:*", count=1000):
        store.client.delete(key)
    store.close()


@pytest.fixture
def content(backend: CheckpointBackend, meta: MetadataStore) -> Iterator[ContentStore]:
    store = ContentStore(backend.store, meta)
    yield store
    store.close()


def chunks_in(content: ContentStore) -> set[str]:
    return {key.rsplit("/", 1)[1] for key in content.objects.list(CHUNK_PREFIX)}


def age_claims(meta: MetadataStore) -> None:
    """As if every claim were made long ago (a collector may then take unreferenced chunks)."""
    claims = meta.keys.cas("claims")
    meta.client.zadd(claims, {sha: 0 for sha in meta.client.zrange(claims, 0, -1)})


def test_parts_round_trip_and_identical_bytes_are_stored_once(content: ContentStore) -> None:
    state = random_parts("chunk/0", "chunk/1", "head")
    first = content.write("acme/a/v1.ckpt", state)
    assert first["size"] == sum(len(p) for p in state.values()) and first["stored"] > first["size"]
    assert len(chunks_in(content)) == 3
    assert content.read("acme/a/v1.ckpt", first["sha256"]) == state

    # The next checkpoint: a new head, the same segments plus a new one. Only new parts are stored.
    later = {**state, "head": os.urandom(64 * KB), "chunk/2": os.urandom(16 * KB)}
    again = content.write("acme/a/v2.ckpt", later)
    manifest_bytes = len(content.objects.get("acme/a/v2.ckpt"))
    assert again["stored"] == manifest_bytes + 64 * KB + 16 * KB
    assert content.read("acme/a/v2.ckpt") == later and content.read("acme/a/v1.ckpt") == state


def test_copy_costs_one_manifest(content: ContentStore) -> None:
    state = random_parts("chunk/0", "head")
    source = content.write("acme/base/v1.ckpt", state)
    before = chunks_in(content)
    copied = content.copy("acme/base/v1.ckpt", source["sha256"], "acme/fork/auto.ckpt")
    assert copied["stored"] == len(content.objects.get("acme/fork/auto.ckpt")) < 4096
    assert chunks_in(content) == before
    assert content.read("acme/fork/auto.ckpt", copied["sha256"]) == state
    with pytest.raises(CheckpointConflict):  # create-only, like every checkpoint object
        content.copy("acme/base/v1.ckpt", None, "acme/fork/auto.ckpt")


def test_format_1_blobs_stay_readable_and_copy_into_chunks(content: ContentStore) -> None:
    blob = b"NMEM" + os.urandom(200 * KB)
    content.objects.put("acme/old/v1.ckpt", blob)  # a checkpoint written before manifests
    assert content.read("acme/old/v1.ckpt") == {LEGACY_PART: blob}
    content.copy("acme/old/v1.ckpt", None, "acme/new/v1.ckpt")
    assert content.manifest("acme/new/v1.ckpt") is not None
    assert content.read("acme/new/v1.ckpt") == {LEGACY_PART: blob}


def test_missing_or_altered_chunks_are_corrupt(content: ContentStore, backend: CheckpointBackend) -> None:
    content.write("acme/a/v1.ckpt", random_parts("chunk/0", "head"))
    shas = sorted(content.manifest("acme/a/v1.ckpt").chunk_shas())
    raw = backend.read_raw(chunk_key(shas[0]))
    backend.write_raw(chunk_key(shas[0]), raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(CheckpointCorrupt):
        content.read("acme/a/v1.ckpt")
    backend.write_raw(chunk_key(shas[0]), raw)
    content.objects.delete(chunk_key(shas[1]))
    with pytest.raises(CheckpointCorrupt, match="missing"):
        content.read("acme/a/v1.ckpt")


def test_a_process_reads_chunks_it_fetched_before_from_memory(backend: CheckpointBackend,
                                                              meta: MetadataStore) -> None:
    content = ContentStore(backend.store, meta, cache_bytes=1024 * KB)
    state = random_parts("chunk/0", "head")
    content.write("acme/base/v1.ckpt", state)
    content.copy("acme/base/v1.ckpt", None, "acme/fork/v1.ckpt")
    assert content.read("acme/base/v1.ckpt") == state
    fetched: list[str] = []
    get = backend.store.get
    content.objects = type("Counting", (), {"get": lambda _s, key, sha=None: fetched.append(key) or get(key, sha)})()
    assert content.read("acme/fork/v1.ckpt") == state
    assert fetched == ["acme/fork/v1.ckpt"]  # the manifest only: both chunks came from memory


def test_concurrent_writers_of_the_same_bytes(content: ContentStore) -> None:
    state = random_parts("chunk/0", "chunk/1", "head")
    assert not failures_in_threads(lambda i: content.write(f"acme/m{i}/v1.ckpt", state), list(range(4)))
    for i in range(4):
        assert content.read(f"acme/m{i}/v1.ckpt") == state


def test_gc_frees_only_chunks_no_manifest_names(content: ContentStore, meta: MetadataStore) -> None:
    shared, own = random_parts("chunk/0"), random_parts("head")
    content.write("acme/keep/v1.ckpt", shared)
    content.write("acme/drop/v1.ckpt", {**shared, **own})
    keep = content.manifest("acme/keep/v1.ckpt").chunk_shas()
    content.objects.delete("acme/drop/v1.ckpt")
    gc = GarbageCollector(content)

    fresh_dry = gc.run(GRACE, dry_run=True)
    fresh = gc.run(GRACE)  # just written: claimed recently, so spared
    assert fresh.deleted == 0 and fresh.spared > 0
    assert (fresh_dry.deleted, fresh_dry.spared, fresh_dry.dry_run) == (0, fresh.spared, True)
    age_claims(meta)
    before = chunks_in(content)
    dry = gc.run(GRACE, dry_run=True)  # counts what the next run deletes, deletes nothing
    assert chunks_in(content) == before
    report = gc.run(GRACE)
    assert report.deleted > 0 and report.spared == 0 and not report.dry_run
    assert (dry.deleted, dry.spared, dry.unreferenced) == (report.deleted, 0, report.unreferenced)
    assert chunks_in(content) == keep
    assert content.read("acme/keep/v1.ckpt") == shared
    assert gc.run(GRACE).deleted == 0


def test_gc_spares_chunks_of_a_manifest_not_yet_written(content: ContentStore, meta: MetadataStore,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    chunks_done, go_on = threading.Event(), threading.Event()
    put_manifest = content._put_manifest

    def slow_manifest(*args, **kwargs):
        chunks_done.set()
        go_on.wait(60)
        return put_manifest(*args, **kwargs)

    monkeypatch.setattr(content, "_put_manifest", slow_manifest)
    state = random_parts("chunk/0", "head")
    writer = threading.Thread(target=content.write, args=("acme/slow/v1.ckpt", state))
    writer.start()
    assert chunks_done.wait(60)
    report = GarbageCollector(content).run(GRACE)  # the chunks exist, no manifest names them yet
    go_on.set()
    writer.join()
    assert report.deleted == 0 and report.spared > 0
    assert content.read("acme/slow/v1.ckpt") == state


def test_a_writer_reusing_a_chunk_being_deleted_waits_and_writes_it_again(
        content: ContentStore, meta: MetadataStore, monkeypatch: pytest.MonkeyPatch) -> None:
    state = random_parts("chunk/0", "head")
    content.write("acme/old/v1.ckpt", state)
    shas = sorted(content.manifest("acme/old/v1.ckpt").chunk_shas())
    content.objects.delete("acme/old/v1.ckpt")
    age_claims(meta)
    assert meta.cas_doom(shas, meta.server_time() - GRACE) == shas  # a collector begins deleting

    told_busy = threading.Event()
    claim = meta.cas_claim

    def watched_claim(wanted):
        now, busy = claim(wanted)
        if busy:
            told_busy.set()
        return now, busy

    monkeypatch.setattr(meta, "cas_claim", watched_claim)
    writer = threading.Thread(target=content.write, args=("acme/new/v1.ckpt", state))
    writer.start()
    assert told_busy.wait(60)
    for sha in shas:  # ...and finishes, while the writer waits
        content.objects.delete(chunk_key(sha))
    meta.cas_forget(shas)
    writer.join()
    assert content.read("acme/new/v1.ckpt") == state


def test_gc_grace_has_a_floor(content: ContentStore) -> None:
    for dry_run in (False, True):  # a dry run says what the same run would do: never a deletion it refuses
        with pytest.raises(InvalidInput, match="grace must be at least 60"):
            GarbageCollector(content).run(1.0, dry_run=dry_run)
    for grace in (float("nan"), float("inf"), -1.0):  # nan < 60 is False: checked first
        with pytest.raises(InvalidInput, match="grace must be a number of seconds"):
            GarbageCollector(content).run(grace, dry_run=True)


def test_one_collector_at_a_time(content: ContentStore, meta: MetadataStore) -> None:
    assert meta.gc_lock("someone-else", 60)
    refused = GarbageCollector(content).run(GRACE, dry_run=True)
    assert not refused.ran and refused.dry_run and "free in at most" in refused.busy, refused
    meta.gc_unlock("someone-else")
    assert GarbageCollector(content).run(GRACE).ran


def test_the_collector_lock_is_a_lease_renewed_while_held(content: ContentStore, meta: MetadataStore,
                                                          monkeypatch) -> None:
    """A holder killed mid-way (a memory deleted while its forget swept) held the lock for an
    hour; now it lapses within LOCK_SECONDS, while a live holder keeps it as long as it works."""
    import time

    import storage.gc as gc

    monkeypatch.setattr(gc, "LOCK_SECONDS", 2)
    monkeypatch.setattr(gc, "LOCK_RENEW_SECONDS", 0.3)
    with gc.collector_lock(meta) as held:
        assert held
        time.sleep(3)  # past one lease: renewed
        assert not GarbageCollector(content).run(GRACE).ran
    assert meta.gc_holder_ttl() is None  # released at the end
    assert meta.gc_lock("a-killed-holder", gc.LOCK_SECONDS)  # never renewed, never released
    with gc.collector_lock(meta, wait_seconds=10) as held:
        assert held  # it lapsed by itself
