"""CheckpointStore contract: the same tests against every backend (local, SeaweedFS, MinIO)."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from errors import CheckpointConflict, CheckpointCorrupt, CheckpointError, CheckpointNotFound, InvalidInput
from storage import CheckpointStore
from tests.storage.conftest import MIB, CheckpointBackend, failures_in_threads


def test_implements_protocol(checkpoint_store: CheckpointStore) -> None:
    assert isinstance(checkpoint_store, CheckpointStore)
    assert checkpoint_store.describe()


def test_put_get_round_trip(checkpoint_store: CheckpointStore) -> None:
    data = os.urandom(4096) + b"\x00\xff" * 7
    info = checkpoint_store.put("acme/notes/v1.ckpt", data)
    assert info == {"key": "acme/notes/v1.ckpt", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert checkpoint_store.get("acme/notes/v1.ckpt") == data
    assert checkpoint_store.get("acme/notes/v1.ckpt", sha256=info["sha256"]) == data


def test_empty_payload_round_trips(checkpoint_store: CheckpointStore) -> None:
    checkpoint_store.put("acme/empty/v1.ckpt", b"")
    assert checkpoint_store.get("acme/empty/v1.ckpt") == b""


def test_put_is_create_only(checkpoint_store: CheckpointStore) -> None:
    checkpoint_store.put("acme/notes/v1.ckpt", b"first")
    with pytest.raises(CheckpointConflict):
        checkpoint_store.put("acme/notes/v1.ckpt", b"second")
    assert checkpoint_store.get("acme/notes/v1.ckpt") == b"first"


def test_missing_key_is_not_found(checkpoint_store: CheckpointStore) -> None:
    with pytest.raises(CheckpointNotFound):
        checkpoint_store.get("acme/notes/missing.ckpt")
    assert not checkpoint_store.exists("acme/notes/missing.ckpt")


def test_exists_delete_and_list(checkpoint_store: CheckpointStore) -> None:
    for key in ("acme/a/v1.ckpt", "acme/a/v2.ckpt", "acme/b/v1.ckpt", "other/a/v1.ckpt"):
        checkpoint_store.put(key, key.encode())
    assert checkpoint_store.list("acme/a/") == ["acme/a/v1.ckpt", "acme/a/v2.ckpt"]
    assert checkpoint_store.list("acme/") == ["acme/a/v1.ckpt", "acme/a/v2.ckpt", "acme/b/v1.ckpt"]
    assert len(checkpoint_store.list()) == 4
    assert checkpoint_store.exists("acme/a/v2.ckpt")
    checkpoint_store.delete("acme/a/v2.ckpt")
    checkpoint_store.delete("acme/a/v2.ckpt")  # deleting twice is fine
    assert not checkpoint_store.exists("acme/a/v2.ckpt")
    assert checkpoint_store.list("acme/a/") == ["acme/a/v1.ckpt"]
    checkpoint_store.put("acme/a/v2.ckpt", b"again")  # a deleted key can be created anew
    assert checkpoint_store.get("acme/a/v2.ckpt") == b"again"


def test_large_state_round_trips(checkpoint_store: CheckpointStore) -> None:
    """11 MiB: three parts on S3 (5 MiB parts in these fixtures), create-only on completion too."""
    data = os.urandom(11 * MIB)
    checkpoint_store.put("acme/big/v1.ckpt", data)
    assert checkpoint_store.get("acme/big/v1.ckpt") == data
    with pytest.raises(CheckpointConflict):
        checkpoint_store.put("acme/big/v1.ckpt", os.urandom(6 * MIB))
    assert checkpoint_store.get("acme/big/v1.ckpt") == data


def test_flipped_byte_is_corrupt(checkpoint_backend: CheckpointBackend) -> None:
    store = checkpoint_backend.store
    store.put("acme/notes/v1.ckpt", os.urandom(2048))
    blob = bytearray(checkpoint_backend.read_raw("acme/notes/v1.ckpt"))
    blob[len(blob) // 2] ^= 0x01
    checkpoint_backend.write_raw("acme/notes/v1.ckpt", bytes(blob))
    with pytest.raises(CheckpointCorrupt, match="sha256"):
        store.get("acme/notes/v1.ckpt")


def test_truncated_object_is_corrupt(checkpoint_backend: CheckpointBackend) -> None:
    store = checkpoint_backend.store
    store.put("acme/notes/v1.ckpt", os.urandom(2048))
    blob = checkpoint_backend.read_raw("acme/notes/v1.ckpt")
    checkpoint_backend.write_raw("acme/notes/v1.ckpt", blob[:-100])
    with pytest.raises(CheckpointCorrupt, match="truncated"):
        store.get("acme/notes/v1.ckpt")
    checkpoint_backend.write_raw("acme/notes/v1.ckpt", blob[:10])
    with pytest.raises(CheckpointCorrupt):
        store.get("acme/notes/v1.ckpt")


def test_object_not_written_by_a_store_is_corrupt(checkpoint_backend: CheckpointBackend) -> None:
    checkpoint_backend.store.put("acme/notes/v1.ckpt", b"x")
    checkpoint_backend.write_raw("acme/notes/v1.ckpt", b"just some bytes that are not a checkpoint frame" * 3)
    with pytest.raises(CheckpointCorrupt):
        checkpoint_backend.store.get("acme/notes/v1.ckpt")


def test_expected_sha_mismatch_is_corrupt(checkpoint_store: CheckpointStore) -> None:
    checkpoint_store.put("acme/notes/v1.ckpt", b"state")
    with pytest.raises(CheckpointCorrupt, match="index"):
        checkpoint_store.get("acme/notes/v1.ckpt", sha256=hashlib.sha256(b"other").hexdigest())


@pytest.mark.parametrize("key", ["", "/abs/v1.ckpt", "a/../b.ckpt", "a//b.ckpt", "a/./b", "a\\b", "a/.tmp-x", "a\nb"])
def test_unsafe_keys_are_refused(checkpoint_store: CheckpointStore, key: str) -> None:
    with pytest.raises(InvalidInput):
        checkpoint_store.put(key, b"x")
    with pytest.raises(InvalidInput):
        checkpoint_store.get(key)


def test_errors_belong_to_the_tree(checkpoint_store: CheckpointStore) -> None:
    # Callers may catch CheckpointError for any checkpoint failure.
    with pytest.raises(CheckpointError):
        checkpoint_store.get("acme/none/v9.ckpt")


def test_eight_writers_race_exactly_one_wins(checkpoint_store: CheckpointStore) -> None:
    payloads = [os.urandom(64 * 1024) + bytes([i]) for i in range(8)]
    barrier = threading.Barrier(8)
    outcomes: list[object] = [None] * 8

    def write(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = checkpoint_store.put("acme/race/v1.ckpt", payloads[i])
        except CheckpointConflict as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, o in enumerate(outcomes) if isinstance(o, dict)]
    assert len(winners) == 1, outcomes
    assert sum(isinstance(o, CheckpointConflict) for o in outcomes) == 7
    assert checkpoint_store.get("acme/race/v1.ckpt") == payloads[winners[0]]


def test_the_local_store_leaves_no_empty_folders_and_puts_beside_deletes(tmp_path) -> None:
    """A deleted memory's objects leave no folders behind (they were ~2 per deleted memory,
    walked by every listing after), and a put into a folder a delete is pruning still lands."""
    from storage.local import LocalCheckpointStore

    store = LocalCheckpointStore(tmp_path / "store")
    for key in ("acme/a/_base/1-x.ckpt", "acme/a/_log/1-2-y.wal", "acme/a/v1.ckpt", "acme/b/v1.ckpt"):
        store.put(key, b"data")
    for key in store.list("acme/a/"):
        store.delete(key)
    assert sorted(p.name for p in (tmp_path / "store" / "acme").iterdir()) == ["b"]
    store.delete("acme/b/v1.ckpt")
    assert (tmp_path / "store").is_dir() and not (tmp_path / "store" / "acme").exists()

    def churn(worker: int) -> None:  # each put's folder is emptied by the other's deletes
        for i in range(200):
            key = f"_chunks/ab/{worker}-{i}"
            store.put(key, b"chunk")
            store.delete(key)

    failures = failures_in_threads(churn, [0, 1])
    assert failures == [] and store.list() == []
