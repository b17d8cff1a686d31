"""The supervisor's per-memory locks (no Ray needed: the locks are plain asyncio)."""

from __future__ import annotations

import asyncio
import gc

from actors import ActorSpec
from cluster import ClusterSettings
from cluster.supervisor import Supervisor
from storage import StorageSettings


def test_a_memory_lock_is_shared_while_used_and_not_kept_for_every_name_ever_seen(tmp_path):
    """A soak reviewer read that the supervisor kept one lock per memory name forever (a
    platform creating and deleting per-user memories grows it without end)."""
    supervisor = Supervisor(ClusterSettings(namespace="locks"), ActorSpec(StorageSettings(data_dir=tmp_path)))
    order: list[str] = []

    async def use(qname: str, tag: str) -> None:
        async with supervisor._lock(qname):
            order.append(f"{tag} in")
            await asyncio.sleep(0.01)
            order.append(f"{tag} out")

    async def scenario() -> None:
        await asyncio.gather(use("acme/a", "first"), use("acme/a", "second"))  # one at a time
        await asyncio.gather(*(use(f"acme/user-{i}", "many") for i in range(1000)))

    asyncio.run(scenario())
    assert order[:4] == ["first in", "first out", "second in", "second out"]
    gc.collect()
    assert len(supervisor._locks) == 0
