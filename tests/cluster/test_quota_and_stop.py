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
        assert refused.value.retry_after is None  # only a deletion frees it: no Retry-After to loop on
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


def test_a_graceful_stop_checkpoints_long_tails_and_keeps_short_ones_as_log(make_cluster, arun, tenant):
    """Hibernation's rule: a memory that learned a little keeps its log (one new head per live
    fork on every restart added ~5 MB each); a long tail is checkpointed; either way the state
    comes back whole."""
    from actors import ActorSettings, is_auto

    cluster = make_cluster(spare_actors=0, actor=ActorSettings(checkpoint_every_writes=40,
                                                               checkpoint_every_seconds=3600.0, wal_tail_writes=3))
    for name in ("little", "much", "none"):
        arun(cluster.create_memory(tenant, name, SMALL))
    arun(cluster.observe(tenant, "little", encode(["only one text"]), ["only one text"]))
    for i in range(3):
        arun(cluster.observe(tenant, "much", encode([f"text {i}"]), [f"text {i}"]))
    expected = {name: arun(cluster.stats(tenant, name))["weight_hash"] for name in ("little", "much")}

    def newest_auto_step(name: str) -> int:
        autos = [c for c in cluster.storage.metadata.list_checkpoints(f"{tenant}/{name}") if is_auto(c["tag"])]
        return autos[-1]["step"]

    saved = arun(cluster._supervisor.checkpoint_live.remote(30.0))
    assert saved == {"saved": 1, "kept_as_log": 2, "failed": []}
    assert newest_auto_step("much") == 3  # in a checkpoint, not only in the WAL
    assert newest_auto_step("little") == 0  # its one write stays in the log
    for name in ("little", "much"):  # as after a stop: the actor gone, the memory woken from storage
        arun(cluster._supervisor.remove.remote(f"{tenant}/{name}"))
        assert arun(cluster.stats(tenant, name))["weight_hash"] == expected[name]
