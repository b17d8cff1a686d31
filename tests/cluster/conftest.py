"""Fixtures for control-plane tests: an event loop and started MemoryClusters per backend.

Each MemoryCluster gets its own Ray namespace (so its supervisor and actors are private) and
its own key/object prefix on the session Valkey / weed servers; teardown kills its actors.
Starting processes is what costs time here (a torch actor takes ~1 s, far more on a loaded
machine), so tests share one cluster per backend per module and isolate themselves by tenant.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterator

import pytest

from actors import ActorSettings
from cluster import ClusterSettings, MemoryCluster
from storage import StorageSettings
from tests.fixtures.servers import make_storage_settings

BACKENDS = ["valkey-local", "valkey-s3"]


@pytest.fixture(scope="session")
def arun() -> Iterator[Callable[[Coroutine], Any]]:
    """Run a coroutine on one event loop kept for the session (clusters hold loop-bound state)."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


def _storage(backend: str, request: pytest.FixtureRequest, root: Path, namespace: str) -> StorageSettings:
    if backend == "embedded":
        return make_storage_settings(data_dir=root / namespace)
    valkey_url = request.getfixturevalue("valkey_url")
    s3 = request.getfixturevalue("s3_server") if backend == "valkey-s3" else None
    return make_storage_settings(data_dir=root / namespace, redis_url=valkey_url, s3=s3, namespace=namespace)


def _factory(request: pytest.FixtureRequest, arun: Callable, root: Path) -> Iterator[Callable[..., MemoryCluster]]:
    clusters: list[MemoryCluster] = []

    def make(backend: str = "valkey-local", **overrides: Any) -> MemoryCluster:
        namespace = f"t{uuid.uuid4().hex[:10]}"
        # reuse_idle_seconds 0: tests that count live actors must not see one hibernate for a start
        values = {"ray_address": None, "namespace": namespace, "max_live_actors": 16, "idle_seconds": 3600.0,
                  "reuse_idle_seconds": 0.0,
                  "actor": ActorSettings(checkpoint_every_writes=40, checkpoint_every_seconds=3600.0),
                  "actor_placement": "pack", "storage": _storage(backend, request, root, namespace)}
        cluster = MemoryCluster(ClusterSettings(**{**values, **overrides}))
        arun(cluster.start())
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        arun(cluster.close(stop_actors=True))


@pytest.fixture
def make_cluster(ray_cluster: dict, arun: Callable, request: pytest.FixtureRequest, tmp_path: Path):
    """make_cluster(backend="valkey-local", **ClusterSettings overrides) -> a private started cluster."""
    yield from _factory(request, arun, tmp_path)


@pytest.fixture(scope="module")
def shared_cluster(ray_cluster: dict, arun: Callable, request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory):
    """shared_cluster(backend) -> the module's cluster for that backend (default settings)."""
    cache: dict[str, MemoryCluster] = {}
    factory = _factory(request, arun, tmp_path_factory.mktemp("clusters"))
    make = next(factory)

    def get(backend: str = "valkey-local") -> MemoryCluster:
        if backend not in cache:
            cache[backend] = make(backend)
        return cache[backend]

    yield get
    next(factory, None)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Storage backend of the production shape: Valkey + local checkpoints, or Valkey + weed S3."""
    return request.param


@pytest.fixture
def tenant() -> str:
    """A fresh tenant, so tests sharing a cluster never see each other's memories."""
    return f"t{uuid.uuid4().hex[:8]}"
