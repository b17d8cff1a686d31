"""A deployment meeting the detached processes of another version in its Ray namespace (a new
version served on a running Ray cluster): the supervisor of other code is replaced, memory
actors of other code are stopped instead of adopted, and the memories they held serve again on
this code; a supervisor of this code is kept by every gateway that starts."""

from __future__ import annotations

import uuid

import pytest

from tests.cluster.helpers import SMALL, encode, wait_until


def _gone(name: str, namespace: str) -> bool:
    import ray

    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return True
    return False


def test_processes_of_other_code_are_replaced(make_cluster, arun, tenant):
    import ray

    from cluster import MemoryCluster

    class SupervisorBeforeCodeIds:  # an earlier release: no identity()
        def ping(self) -> bool:
            return True

    class MemoryActorOfOtherCode:  # answers identity() as an earlier release's actor did
        def __init__(self, qname: str | None) -> None:
            self.qname = qname

        def identity(self) -> dict:
            return {"qname": self.qname, "started": True, "warm": True}

    namespace = f"t{uuid.uuid4().hex[:10]}"
    detached = {"namespace": namespace, "lifetime": "detached", "num_cpus": 0}
    old_supervisor = ray.remote(SupervisorBeforeCodeIds).options(name="supervisor", **detached).remote()
    old_actors = {f"mem:old{i}": qname for i, qname in enumerate([f"{tenant}/kept", None])}  # a memory, a spare
    handles = [ray.remote(MemoryActorOfOtherCode).options(name=name, **detached).remote(qname)
               for name, qname in old_actors.items()]
    assert ray.get(old_supervisor.ping.remote(), timeout=60)
    assert ray.get([h.identity.remote() for h in handles], timeout=60)[0]["qname"] == f"{tenant}/kept"

    cluster = make_cluster(namespace=namespace)
    current = ray.get_actor("supervisor", namespace=namespace)
    assert current != old_supervisor
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(old_supervisor.ping.remote(), timeout=60)

    # The new supervisor adopts nothing of the other code: the memory the old actor claimed
    # starts on this code (an adopted stand-in would fail its start()).
    arun(cluster.create_memory(tenant, "kept", SMALL))
    text = "a memory served again on the new code"
    assert arun(cluster.observe(tenant, "kept", encode([text]), [text]))["step"] == 1
    assert wait_until(lambda: all(_gone(name, namespace) for name in old_actors), timeout=60)

    # Another gateway of the same code keeps the supervisor (and the table it holds).
    again = MemoryCluster(cluster.settings)
    arun(again.start())
    try:
        assert ray.get_actor("supervisor", namespace=namespace) == current
        assert arun(again.stats(tenant, "kept"))["total_observations"] == 1
        assert arun(cluster.live_actor_count()) == 1
    finally:
        arun(again.close())
