"""Per-tenant memory quota (create, fork, image import) and the graceful stop's checkpoint of
every live memory, through MemoryCluster."""

from __future__ import annotations

import pytest

from cluster import ExportedState
from errors import CheckpointNotFound, MemoryExists, QuotaExceeded
from tests.cluster.helpers import SMALL, encode


def test_memory_quota_counts_create_fork_and_import(make_cluster, arun, tenant):
    cluster = make_cluster(max_memories_per_tenant=1, spare_actors=0)
    arun(cluster.create_memory(tenant, "one", SMALL))
    state = arun(cluster.export_state(tenant, "one"))
    attempts = [cluster.create_memory(tenant, "two", SMALL), cluster.fork(tenant, "one", "two"),
                cluster.import_state(tenant, "two", ExportedState(**vars(state)))]
    for attempt in attempts:
        with pytest.raises(QuotaExceeded, match="NMEM_MAX_MEMORIES_PER_TENANT") as refused:
            arun(attempt)
        assert refused.value.retry_after > 0
    assert [m["name"] for m in arun(cluster.list_memories(tenant))["memories"]] == ["one"]
    with pytest.raises(MemoryExists):  # at the cap, a taken name is named as taken (import --create)
        arun(cluster.create_memory(tenant, "one", SMALL))
    with pytest.raises(CheckpointNotFound):  # and a missing tag as missing
        arun(cluster.fork(tenant, "one", "two", source_tag="no-such-tag"))
    arun(cluster.create_memory(tenant + "-other", "two", SMALL))  # the quota is per tenant
    arun(cluster.delete_memory(tenant, "one"))
    arun(cluster.create_memory(tenant, "two", SMALL))  # room again


def test_concurrent_creations_never_overshoot_the_quota(make_cluster, arun, tenant):
    """Eight creations at once with room for two more: the early check passes for all of them,
    so only the registration's own check (one step with the insert) can hold the line."""
    import asyncio

    cluster = make_cluster(max_memories_per_tenant=3, spare_actors=0)
    arun(cluster.create_memory(tenant, "base", SMALL))

    async def burst() -> list:
        forks = [cluster.fork(tenant, "base", f"user-{i}") for i in range(4)]
        creates = [cluster.create_memory(tenant, f"new-{i}", SMALL) for i in range(4)]
        return await asyncio.gather(*forks, *creates, return_exceptions=True)

    answers = arun(burst())
    refused = [a for a in answers if isinstance(a, QuotaExceeded)]
    assert len(refused) == 6 and "NMEM_MAX_MEMORIES_PER_TENANT" in str(refused[0])
    assert not [a for a in answers if isinstance(a, BaseException) and not isinstance(a, QuotaExceeded)]
    assert len(arun(cluster.list_memories(tenant))["memories"]) == 3


def test_checkpoint_live_saves_every_memory_with_unsaved_writes(make_cluster, arun, tenant):
    from actors import is_auto

    cluster = make_cluster(spare_actors=0)
    for name in ("a", "b"):
        arun(cluster.create_memory(tenant, name, SMALL))
    arun(cluster.observe(tenant, "a", encode(["only a learns"]), ["only a learns"]))
    saved = arun(cluster._supervisor.checkpoint_live.remote(30.0))
    assert saved == {"saved": 2, "failed": []}
    autos = [c for c in cluster.storage.metadata.list_checkpoints(f"{tenant}/a") if is_auto(c["tag"])]
    assert autos[-1]["step"] == 1  # the write is in a checkpoint, not only in the WAL
