"""Every redis/botocore/OS error is translated into our tree, and real failures surface quickly.

The first half checks the mapping for every exception class the libraries define; the second
half provokes the failures for real (closed ports, a server that never answers, wrong
credentials, wrong key types) against real servers.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest
import redis
from botocore import exceptions as boto_exc

from errors import (
    CheckpointConflict,
    CheckpointError,
    CheckpointNotFound,
    MetadataError,
    StorageError,
)
from storage import EmbeddedValkey, MetadataStore, S3CheckpointStore, open_storage
from storage.translate import redacted_url, translate_os, translate_redis, translate_s3
from tests.fixtures.servers import S3Server, make_storage_settings

ENDPOINT = "http://s3.example.test:9000"


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _client_error(code: str, status: int) -> boto_exc.ClientError:
    response = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return boto_exc.ClientError(response, "PutObject")


@pytest.mark.parametrize("cls", [redis.RedisError, *_subclasses(redis.RedisError)], ids=lambda c: c.__name__)
def test_every_redis_error_is_metadata_error(cls: type) -> None:
    # Cluster redirects (MOVED/ASK) parse their message as "<slot> <host:port>".
    redirect = issubclass(cls, (redis.exceptions.AskError, redis.exceptions.MovedError))
    exc = cls("3999 127.0.0.1:6381") if redirect else cls("boom")
    error = translate_redis(exc, "redis://db:6379/0")
    assert isinstance(error, MetadataError)
    assert "redis://db:6379/0" in str(error) and cls.__name__ in str(error)


@pytest.mark.parametrize("cls", _subclasses(boto_exc.BotoCoreError), ids=lambda c: c.__name__)
def test_every_botocore_error_is_checkpoint_error(cls: type) -> None:
    exc = cls.__new__(cls)  # their constructors want class-specific fields; the mapping only needs the type
    Exception.__init__(exc, "boom")
    error = translate_s3(exc, ENDPOINT, "acme/notes/v1.ckpt")
    assert isinstance(error, CheckpointError) and ENDPOINT in str(error)


@pytest.mark.parametrize(
    ("code", "status", "conditional", "expected"),
    [
        ("NoSuchKey", 404, False, CheckpointNotFound),
        ("404", 404, False, CheckpointNotFound),
        ("PreconditionFailed", 412, True, CheckpointConflict),
        ("NoSuchKey", 404, True, CheckpointConflict),  # MinIO's answer to If-None-Match on an existing key
        ("ConditionalRequestConflict", 409, True, CheckpointConflict),
        ("AccessDenied", 403, False, CheckpointError),
        ("InvalidAccessKeyId", 403, True, CheckpointError),
        ("SignatureDoesNotMatch", 403, False, CheckpointError),
        ("NoSuchBucket", 404, False, CheckpointError),
        ("InternalError", 500, False, CheckpointError),
        ("SlowDown", 503, True, CheckpointError),
    ],
)
def test_client_errors_map_by_code_and_status(code: str, status: int, conditional: bool, expected: type) -> None:
    error = translate_s3(_client_error(code, status), ENDPOINT, "k", conditional=conditional)
    assert type(error) is expected
    assert ENDPOINT in str(error)


def test_credential_errors_say_what_to_fix() -> None:
    assert "NMEM_S3_SECRET_KEY" in str(translate_s3(_client_error("SignatureDoesNotMatch", 403), ENDPOINT, "k"))
    assert "NMEM_S3_ACCESS_KEY" in str(translate_s3(boto_exc.NoCredentialsError(), ENDPOINT, "k"))


def test_os_errors_map_to_checkpoint_errors() -> None:
    assert type(translate_os(FileNotFoundError(2, "x"), "/root", "k")) is CheckpointNotFound
    assert type(translate_os(FileExistsError(17, "x"), "/root", "k")) is CheckpointConflict
    error = translate_os(PermissionError(13, "denied"), "/data/ckpt", "k")
    assert type(error) is CheckpointError and "/data/ckpt" in str(error)


def test_passwords_never_reach_messages() -> None:
    assert redacted_url("redis://user:hunter2@db:6379/0") == "redis://user:***@db:6379/0"
    store = MetadataStore("redis://:hunter2@127.0.0.1:1/0", timeout=0.5)
    with pytest.raises(MetadataError) as info:
        store.ping()
    assert "hunter2" not in str(info.value)


# -- real failures ------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def test_redis_down_is_metadata_error() -> None:
    port = _closed_port()
    store = MetadataStore(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    with pytest.raises(MetadataError, match=f"127.0.0.1:{port}.*unreachable"):
        store.create_memory("acme/notes", {})


@pytest.mark.timeout(60)  # hang guard, not a speed assertion
def test_redis_that_never_answers_is_metadata_error(black_hole: int) -> None:
    store = MetadataStore(f"redis://127.0.0.1:{black_hole}/0", timeout=0.3)
    with pytest.raises(MetadataError, match="unreachable or did not answer"):
        store.ping()


def test_redis_wrong_password_is_metadata_error(valkey_url: str) -> None:
    store = MetadataStore(valkey_url.replace("redis://", "redis://nobody:wrong@"), timeout=2.0)
    with pytest.raises(MetadataError):
        store.ping()


def test_redis_command_error_is_metadata_error(valkey_url: str, storage_namespace: str) -> None:
    store = MetadataStore(valkey_url, prefix=storage_namespace)
    store.client.set(store.keys.registry(), "not a hash")  # a foreign value where a hash belongs
    try:
        with pytest.raises(MetadataError, match="rejected a command"):
            store.create_memory("acme/notes", {})
    finally:
        store.client.delete(store.keys.registry())
        store.close()


def _s3_store(endpoint: str, server: S3Server | None = None, **overrides: object) -> S3CheckpointStore:
    options: dict = {"connect_timeout": 1.0, "read_timeout": 1.0, "max_attempts": 1}
    options.update(overrides)
    return S3CheckpointStore(
        endpoint,
        "nmem-test",
        access_key=server.access_key if server else "k",
        secret_key=server.secret_key if server else "s",
        **options,
    )


def test_s3_down_is_checkpoint_error_naming_endpoint() -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = _s3_store(endpoint, max_attempts=3)
    for call in (lambda: store.get("a/b.ckpt"), lambda: store.put("a/b.ckpt", b"x"), lambda: store.list("a/")):
        with pytest.raises(CheckpointError, match=endpoint):
            call()


@pytest.mark.timeout(60)  # hang guard, not a speed assertion
def test_s3_that_never_answers_is_checkpoint_error(black_hole: int) -> None:
    endpoint = f"http://127.0.0.1:{black_hole}"
    with pytest.raises(CheckpointError, match=f"{endpoint}.*unreachable or timed out"):
        _s3_store(endpoint).get("a/b.ckpt")


@pytest.mark.parametrize("bad", ["secret", "access"])
def test_s3_refused_credentials_is_checkpoint_error(s3_server: S3Server, bad: str) -> None:
    overrides = {"secret_key": "wrong-secret"} if bad == "secret" else {"access_key": "unknown-key"}
    store = S3CheckpointStore(
        s3_server.endpoint, s3_server.bucket, max_attempts=1,
        **{"access_key": s3_server.access_key, "secret_key": s3_server.secret_key, **overrides},
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=f"{s3_server.endpoint} refused the credentials") as info:
        store.put("acme/notes/v1.ckpt", b"x")
    assert not isinstance(info.value, (CheckpointConflict, CheckpointNotFound))


def test_open_storage_fails_fast_and_stops_its_valkey(tmp_path: Path) -> None:
    settings = make_storage_settings(
        data_dir=tmp_path / "nmem",
        s3_endpoint=f"http://127.0.0.1:{_closed_port()}",
        s3_access_key="k",
        s3_secret_key="s",
        s3_connect_timeout=1.0,
        s3_max_attempts=1,
    )
    with pytest.raises(CheckpointError, match=settings.s3_endpoint):
        open_storage(settings)
    # The embedded Valkey it started was stopped again: the directory is free.
    with EmbeddedValkey(settings.valkey_dir) as valkey:
        assert valkey.is_running()


def test_all_storage_errors_are_storage_errors() -> None:
    for cls in (MetadataError, CheckpointError, CheckpointNotFound, CheckpointConflict):
        assert issubclass(cls, StorageError)
