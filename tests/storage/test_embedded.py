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
from storage.embedded import _pid_alive
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
        with pytest.raises(MetadataError, match="NMEM_REDIS_URL to the URL in") as refused:
            EmbeddedValkey(tmp_path / "valkey").start()
        assert first.url.split("@")[0] not in str(refused.value)  # the password is never shown
        assert (tmp_path / "valkey" / "valkey.url").read_text().strip() == first.url
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


def test_readiness_probes_write_so_a_store_refusing_writes_is_not_ready(redis_s3_settings: StorageSettings,
                                                                       embedded_storage_settings: StorageSettings) -> None:
    """A PING and a HEAD said "ok" while every write failed (Valkey refusing writes, its disk
    full; the bucket deleted under the server)."""
    import uuid

    import redis

    from errors import CheckpointError, MetadataError

    with open_storage(embedded_storage_settings) as storage:
        admin = redis.Redis.from_url(storage.redis_url)
        storage.metadata.ping()
        admin.config_set("min-replicas-to-write", 1)  # answers PING, refuses every write
        try:
            with pytest.raises(MetadataError, match="NOREPLICAS"):
                storage.metadata.ping()
            assert admin.ping()
        finally:
            admin.config_set("min-replicas-to-write", 0)
        storage.metadata.ping()
        assert storage.metadata.keeps_a_log() is True  # an external one without is warned of at start
        admin.config_set("appendonly", "no")
        assert storage.metadata.keeps_a_log() is False
        admin.config_set("appendonly", "yes")
    own_bucket = redis_s3_settings.model_copy(update={"s3_bucket": f"probe-{uuid.uuid4().hex[:12]}"})
    with open_storage(own_bucket) as storage:
        storage.check_checkpoints()
        assert storage.checkpoints.list() == []  # the probe leaves nothing behind
        storage.checkpoints._client.delete_bucket(Bucket=own_bucket.s3_bucket)
        with pytest.raises(CheckpointError):
            storage.check_checkpoints()


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


def test_a_killed_server_is_restarted_on_the_same_url_with_every_write(tmp_path: Path) -> None:
    """SIGKILL of the Valkey process (not of its owner): the owner's watchdog starts it again on
    the same port and password, and the same client carries on by itself."""
    import signal
    import time

    valkey = EmbeddedValkey(tmp_path / "valkey")
    url = valkey.start()
    store = MetadataStore(url)
    try:
        store.create_memory("acme/notes", {"config": {}})
        _append_concurrently(store, "acme/notes", 200)
        first_pid = valkey.pid
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _pid_alive(first_pid):  # SIGKILL lands asynchronously
            time.sleep(0.01)
        while True:  # writes fail (MetadataError) until the server is back, then succeed again
            try:
                store.wal_append("acme/notes", {"step": 201, "vectors": b"x", "texts": ["after"]})
                break
            except MetadataError:
                assert time.monotonic() < deadline, "the embedded Valkey did not come back"
                time.sleep(0.05)
        while valkey.restarts == 0:  # the server answers a moment before the watchdog records it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert valkey.url == url and valkey.pid != first_pid and valkey.restarts == 1
        assert sorted(e["step"] for e in store.wal_read_after("acme/notes", 0)) == list(range(1, 202))
    finally:
        store.close()
        valkey.stop()


def test_data_is_private_and_the_server_wants_the_password(tmp_path: Path) -> None:
    import redis

    valkey = EmbeddedValkey(tmp_path / "valkey")
    url = valkey.start()
    try:
        MetadataStore(url).create_memory("acme/notes", {"config": {}})
        port = valkey.url.rsplit(":", 1)[1].split("/")[0]
        anonymous = redis.Redis(host="127.0.0.1", port=int(port))
        with pytest.raises(redis.RedisError):
            anonymous.hgetall("nmem:registry")
        assert anonymous.ping()  # liveness probes need no password
        assert (tmp_path / "valkey").stat().st_mode & 0o777 == 0o700
        files = [p for p in (tmp_path / "valkey").rglob("*") if p.is_file()]
        assert any(p.name.endswith(".aof") for p in files)
        assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}, files
        assert valkey.url.split("@")[0].split(":")[-1] not in (tmp_path / "valkey" / "users.acl").read_text()
        assert "***" in repr(valkey) and url not in repr(valkey)
    finally:
        valkey.stop()
    with EmbeddedValkey(tmp_path / "valkey") as again:  # same port and password next time
        assert again.url == url
