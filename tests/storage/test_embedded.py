"""Embedded defaults: Valkey durability across SIGKILL, one server per directory, open_storage wiring."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from errors import MetadataError
from storage import EmbeddedValkey, LocalCheckpointStore, MetadataStore, S3CheckpointStore, open_storage
from storage.settings import StorageSettings

REPO = Path(__file__).resolve().parents[2]


def _append_concurrently(store: MetadataStore, name: str, total: int, writers: int = 10) -> None:
    # Several writers let Valkey group fsyncs (appendfsync always fsyncs once per event-loop turn).
    def write(first: int) -> None:
        for step in range(first, total + 1, writers):
            store.wal_append(name, {"step": step, "vectors": step.to_bytes(4, "little"), "texts": [f"obs {step}"]})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(1, writers + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_wal_survives_sigkill_of_the_server(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey")
    store = MetadataStore(valkey.start())
    store.create_memory("acme/notes", {"config": {}})
    _append_concurrently(store, "acme/notes", 1000)
    store.close()
    pid = valkey.pid
    valkey.kill()  # SIGKILL: no shutdown hook, no final fsync
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    restarted = EmbeddedValkey(tmp_path / "valkey")
    store = MetadataStore(restarted.start())
    try:
        entries = store.wal_read_after("acme/notes", 0)
        assert sorted(e["step"] for e in entries) == list(range(1, 1001))
        assert all(e["vectors"] == e["step"].to_bytes(4, "little") for e in entries)
        assert store.get_memory("acme/notes")["name"] == "acme/notes"
    finally:
        store.close()
        restarted.stop()


def test_second_server_on_same_directory_is_refused(tmp_path: Path) -> None:
    with EmbeddedValkey(tmp_path / "valkey") as first:
        with pytest.raises(MetadataError, match=f"NMEM_REDIS_URL={first.url}"):
            EmbeddedValkey(tmp_path / "valkey").start()
        assert first.is_running()
    # Released on stop: the directory can be served again.
    with EmbeddedValkey(tmp_path / "valkey") as again:
        assert again.is_running()


def test_orphaned_server_is_stopped_before_restart(tmp_path: Path) -> None:
    """A server whose owner died (lock released, process still running) must not share the AOF."""
    orphan = EmbeddedValkey(tmp_path / "valkey")
    MetadataStore(orphan.start()).create_memory("acme/notes", {"config": {}})
    orphan_process = orphan._server._process
    orphan._release_lock()  # what the owner's death does; the server process lives on
    orphan._server = None  # forget it without stopping it, like a dead owner would
    try:
        with EmbeddedValkey(tmp_path / "valkey") as fresh:
            assert fresh.pid != orphan_process.pid
            assert orphan_process.poll() is not None, "the orphan still runs beside the new server"
            assert MetadataStore(fresh.url).memory_exists("acme/notes")
    finally:
        if orphan_process.poll() is None:
            orphan_process.kill()
        orphan_process.wait(timeout=5)


def test_open_storage_embedded_default(embedded_storage_settings: StorageSettings) -> None:
    with open_storage(embedded_storage_settings) as storage:
        assert storage.embedded is not None and storage.embedded.is_running()
        assert storage.settings.redis_url == storage.redis_url == storage.embedded.url
        assert storage.settings.data_dir.is_absolute()
        assert isinstance(storage.checkpoints, LocalCheckpointStore)
        assert storage.checkpoints.root == storage.settings.data_dir / "checkpoints"
        storage.metadata.create_memory("acme/notes", {"config": {}})
        storage.checkpoints.put("acme/notes/v1.ckpt", b"state")
        embedded = storage.embedded
    assert not embedded.is_running()
    # Data persists across a full close/reopen of the embedded default.
    with open_storage(embedded_storage_settings) as storage:
        assert storage.metadata.memory_exists("acme/notes")
        assert storage.checkpoints.get("acme/notes/v1.ckpt") == b"state"


def test_open_storage_with_urls_starts_nothing(redis_s3_settings: StorageSettings) -> None:
    with open_storage(redis_s3_settings) as storage:
        assert storage.embedded is None
        assert isinstance(storage.checkpoints, S3CheckpointStore)
        assert not redis_s3_settings.valkey_dir.exists()
        storage.metadata.ping()


def test_storage_pickles_to_a_connection_not_a_second_server(embedded_storage_settings: StorageSettings) -> None:
    with open_storage(embedded_storage_settings) as storage:
        storage.metadata.create_memory("acme/notes", {"config": {}})
        copy = pickle.loads(pickle.dumps(storage))
        try:
            assert copy.embedded is None and copy.redis_url == storage.redis_url
            assert copy.metadata.memory_exists("acme/notes")
        finally:
            copy.close()
        assert storage.embedded.is_running()  # closing the copy left the server alone


def test_another_process_shares_the_embedded_server(embedded_storage_settings: StorageSettings) -> None:
    """What a Ray actor does: rebuild Storage from the resolved settings in its own process."""
    child = textwrap.dedent(
        """
        import pickle, sys
        from storage import open_storage
        settings = pickle.load(sys.stdin.buffer)
        with open_storage(settings) as storage:
            assert storage.embedded is None, "a second Valkey was started"
            storage.metadata.wal_append("acme/notes", {"step": 1, "vectors": b"xy", "texts": ["from child"]})
            storage.checkpoints.put("acme/notes/child.ckpt", b"child state")
        """
    )
    with open_storage(embedded_storage_settings) as storage:
        storage.metadata.create_memory("acme/notes", {"config": {}})
        subprocess.run(
            [sys.executable, "-c", child],
            input=pickle.dumps(storage.settings),
            cwd=REPO,
            check=True,
            timeout=60,
        )
        assert storage.metadata.wal_read_after("acme/notes", 0)[0]["texts"] == ["from child"]
        assert storage.checkpoints.get("acme/notes/child.ckpt") == b"child state"
