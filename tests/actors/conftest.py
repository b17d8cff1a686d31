"""Fixtures for MemoryActor tests: real storage (session Valkey + local dir or weed S3).

The actor class is plain Python, so most behaviour is tested in this process (fast); the
cluster tests run the same class as Ray actors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from actors import ActorSettings, ActorSpec, MemoryActor, normalize_config
from storage import Storage, open_storage
from tests.cluster.helpers import SMALL
from tests.fixtures.servers import make_storage_settings


@pytest.fixture(params=["valkey-local", "valkey-s3"])
def storage(request: pytest.FixtureRequest, valkey_url: str, storage_namespace: str,
            tmp_path: Path) -> Iterator[Storage]:
    s3 = request.getfixturevalue("s3_server") if request.param == "valkey-s3" else None
    settings = make_storage_settings(data_dir=tmp_path / "nmem", redis_url=valkey_url, s3=s3,
                                     namespace=storage_namespace)
    with open_storage(settings) as opened:
        yield opened


@pytest.fixture
def local_storage(valkey_url: str, storage_namespace: str, tmp_path: Path) -> Iterator[Storage]:
    settings = make_storage_settings(data_dir=tmp_path / "nmem", redis_url=valkey_url, namespace=storage_namespace)
    with open_storage(settings) as opened:
        yield opened


def register(storage: Storage, qname: str, config: dict | None = None) -> dict:
    full = normalize_config(config or SMALL)
    storage.metadata.create_memory(qname, {"tenant": qname.split("/")[0], "name": qname, "config": full,
                                           "encoder": full["encoder"], "parent": None, "source_tag": None})
    return full


@pytest.fixture
def make_actor(request: pytest.FixtureRequest) -> Iterator[Callable[..., MemoryActor]]:
    """make_actor(storage, qname, **spec) -> a started in-process MemoryActor (registered first)."""
    actors: list[MemoryActor] = []

    def make(storage: Storage, qname: str, register_first: bool = True, **spec) -> MemoryActor:
        if register_first and not storage.metadata.memory_exists(qname):
            register(storage, qname)
        values = {"checkpoint_every_writes": 1000, "checkpoint_every_seconds": 3600.0, **spec}
        actor = MemoryActor(qname, ActorSpec(storage=storage.settings, settings=ActorSettings(**values)))
        actor.start()
        actors.append(actor)
        return actor

    yield make
    for actor in actors:
        actor._stop.set()
        actor._wake.set()
        if actor._storage is not None:
            actor._storage.close()
