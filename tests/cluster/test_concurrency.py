"""Concurrency: many writers into one memory are applied one at a time, none lost; reads
run beside them."""

from __future__ import annotations

import asyncio

from tests.cluster.helpers import SMALL, encode, kill_actor

WRITERS, WRITES_EACH = 16, 5


def test_sixteen_concurrent_writers(shared_cluster, arun, tenant):
    cluster = shared_cluster()  # auto-checkpoints every 40 writes, so two land mid-stream
    arun(cluster.create_memory(tenant, "busy", SMALL))
    texts = [f"writer {w} says item {k}" for w in range(WRITERS) for k in range(WRITES_EACH)]
    vectors = encode(texts)

    async def writer(w: int) -> list[int]:
        steps = []
        for k in range(WRITES_EACH):
            i = w * WRITES_EACH + k
            result = await cluster.observe(tenant, "busy", vectors[i : i + 1], [texts[i]])
            steps.append(result["step"])
        return steps

    async def reader() -> int:
        reads = 0
        for i in range(20):
            await cluster.surprise(tenant, "busy", vectors[i], texts[i])
            await cluster.stats(tenant, "busy")
            reads += 1
        return reads

    async def run_all():
        return await asyncio.gather(*(writer(w) for w in range(WRITERS)), reader())

    *steps, reads = arun(run_all())
    sent = WRITERS * WRITES_EACH
    # Every write got its own step: applied strictly one after another, none lost or doubled.
    assert sorted(s for per_writer in steps for s in per_writer) == list(range(1, sent + 1))
    assert all(per_writer == sorted(per_writer) for per_writer in steps)
    assert reads == 20
    stats = arun(cluster.stats(tenant, "busy"))
    assert stats["total_observations"] == sent
    assert len(arun(cluster.history(tenant, "busy", limit=1000))["observations"]) == sent
    # The interleaved WAL and the mid-stream checkpoint replay to the same weights.
    kill_actor(cluster.settings.namespace, f"{tenant}/busy")
    after = arun(cluster.stats(tenant, "busy"))
    assert after["weight_hash"] == stats["weight_hash"] and after["total_observations"] == sent
