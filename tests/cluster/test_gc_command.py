"""`neural-memory gc` (and cluster.collector.collect_once): collects what no checkpoint names,
against configured storage or the embedded Valkey a running server holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cluster.collector import collect_once
from storage import EmbeddedValkey, StorageSettings, open_storage
from storage.cas import CHUNK_PREFIX
from tests.fixtures.servers import make_storage_settings

REPO = Path(__file__).resolve().parents[2]


def _orphan_chunks(storage) -> set[str]:
    """Write a checkpoint and a second one sharing half of it, drop the second's manifest and
    age every claim: the unshared half is garbage, the rest is still named."""
    content = storage.content
    kept, dropped = {"chunk/0": os.urandom(65536)}, {"head": os.urandom(65536)}
    content.write("acme/keep/v1.ckpt", kept)
    content.write("acme/drop/v1.ckpt", {**kept, **dropped})
    named = content.manifest("acme/keep/v1.ckpt").chunk_shas()
    content.objects.delete("acme/drop/v1.ckpt")
    claims = storage.metadata.keys.cas("claims")
    storage.metadata.client.zadd(claims, {sha: 0 for sha in storage.metadata.client.zrange(claims, 0, -1)})
    return named


def _chunks(storage) -> set[str]:
    return {key.rsplit("/", 1)[1] for key in storage.checkpoints.list(CHUNK_PREFIX)}


def test_the_command_deletes_unnamed_chunks(valkey_url, storage_namespace, tmp_path):
    settings = make_storage_settings(data_dir=tmp_path / "nmem", redis_url=valkey_url, namespace=storage_namespace)
    with open_storage(settings) as storage:
        named = _orphan_chunks(storage)
        env = {**os.environ, "NMEM_REDIS_URL": valkey_url, "NMEM_REDIS_PREFIX": storage_namespace,
               "NMEM_DATA_DIR": str(tmp_path / "nmem")}
        command = [sys.executable, "-m", "serve.cli", "gc"]
        dry = subprocess.run([*command, "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert dry.returncode == 0, dry.stderr
        would = json.loads(dry.stdout)
        assert would["dry_run"] and would["deleted"] > 0 and _chunks(storage) > named  # counted, kept
        # A checkpoint that cannot be read names chunks no one knows: nothing is swept, and the
        # command says which object and what to do, with a failing exit status.
        damaged = tmp_path / "nmem" / "checkpoints" / "acme" / "keep" / "v1.ckpt"
        intact = damaged.read_bytes()
        damaged.write_bytes(b"garbage")
        stuck = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert stuck.returncode == 1 and json.loads(stuck.stdout)["unreadable_keys"] == ["acme/keep/v1.ckpt"]
        assert "deleted nothing" in stuck.stderr and "acme/keep/v1.ckpt" in stuck.stderr, stuck.stderr
        assert _chunks(storage) > named
        damaged.write_bytes(intact)
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["deleted"] == would["deleted"]
        assert _chunks(storage) == named
        assert storage.content.read("acme/keep/v1.ckpt")


def test_collect_once_shares_the_embedded_valkey_a_server_holds(tmp_path):
    settings = StorageSettings(data_dir=tmp_path / "nmem")
    with open_storage(settings) as running:  # as `neural-memory serve` holds it
        assert isinstance(running.embedded, EmbeddedValkey)
        named = _orphan_chunks(running)
        report = collect_once(settings, 60.0)
        assert report.ran and report.deleted > 0
        assert _chunks(running) == named


def test_the_command_refuses_a_folder_without_server_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NMEM_")}
    done = subprocess.run([sys.executable, "-m", "serve.cli", "gc", "--data-dir", str(tmp_path / "elsewhere")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no server data at" in done.stderr and "--data-dir" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "elsewhere").exists()  # no empty store started in its place


def test_a_collection_waits_for_one_holding_the_lock(tmp_path):
    """A forget holds the collector lock while it deletes what it erased: under a stream of
    them `neural-memory gc` exited 1 three times in four. It now waits (--wait) for the lock."""
    import threading

    from storage.gc import collector_lock

    settings = StorageSettings(data_dir=tmp_path / "nmem")
    with open_storage(settings) as running:
        named = _orphan_chunks(running)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with collector_lock(running.metadata) as taken:
                assert taken
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        once = collect_once(settings, 60.0)
        assert not once.ran and "holds the lock" in once.busy and _chunks(running) > named
        threading.Timer(1.5, release.set).start()
        waited = collect_once(settings, 60.0, wait_seconds=30.0)
        holder.join()
        assert waited.ran and waited.deleted > 0 and _chunks(running) == named
