"""Hibernation: a cap on live actors evicts the least recently used; idle actors sleep;
every memory still answers correctly after rehydration."""

from __future__ import annotations

import time

import pytest

from tests.cluster.helpers import SMALL, encode, named_memory_actors, spare_actors, wait_until

ANIMALS = ["otter", "falcon", "lynx", "heron", "bison", "gecko", "walrus", "ibis", "marten", "okapi",
           "tapir", "quokka", "narwhal", "ocelot", "puffin", "dingo", "serval", "kiwi", "manatee", "jackal"]


@pytest.mark.slow
def test_cap_of_four_with_twenty_memories(make_cluster, arun, tenant):
    cluster = make_cluster(max_live_actors=4)
    namespace = cluster.settings.namespace
    facts = {f"m{i:02d}": f"the {animal} lives in enclosure {i * 7}" for i, animal in enumerate(ANIMALS)}
    most_live = 0

    def check_cap() -> None:
        nonlocal most_live
        live = arun(cluster.live_actor_count())
        actual = len(named_memory_actors(namespace))
        most_live = max(most_live, live, actual)
        assert live <= 4 and actual <= 4, (live, actual)

    for name, fact in facts.items():
        arun(cluster.create_memory(tenant, name, SMALL))
        arun(cluster.observe(tenant, name, encode([fact]), [fact]))
        check_cap()
    # Second round: every memory (most of them hibernated by now) is queried and learns more.
    for name, fact in facts.items():
        answer = arun(cluster.infer(tenant, name, encode([fact])[0], fact, top_k=1))
        assert fact in answer["response"], (name, answer["response"])
        follow_up = f"{fact} since spring"
        result = arun(cluster.observe(tenant, name, encode([follow_up]), [follow_up]))
        assert result["step"] == 2
        check_cap()
    assert most_live == 4
    listed = arun(cluster.list_memories(tenant))["memories"]
    assert len(listed) == 20 and all(m["total_observations"] == 2 for m in listed)
    assert sum(m["live"] for m in listed) == 4


def test_idle_actors_hibernate_and_rehydrate(make_cluster, arun, tenant):
    cluster = make_cluster(idle_seconds=1.0)
    hashes = {}
    for name in ("sleepy", "dozy"):
        arun(cluster.create_memory(tenant, name, SMALL))
        text = f"{name} notes that the tide is low"
        hashes[name] = arun(cluster.observe(tenant, name, encode([text]), [text]))["weight_hash"]
    assert wait_until(lambda: arun(cluster.live_actor_count()) == 0, timeout=120)
    assert named_memory_actors(cluster.settings.namespace) == []
    assert not any(m["live"] for m in arun(cluster.list_memories(tenant))["memories"])
    for name, weight_hash in hashes.items():
        stats = arun(cluster.stats(tenant, name))
        assert stats["weight_hash"] == weight_hash and stats["total_observations"] == 1


def test_a_write_waiting_for_its_predecessor_keeps_its_memory_awake(make_cluster, arun, tenant):
    """Idle for longer than idle_seconds, but a write is waiting (after_request_id) in its
    actor: the memory is not hibernated under it, so the write gets its 409 when its own wait
    ends (it used to be refused, retried on a woken memory and cut off again, for minutes)."""
    from actors import ActorSettings
    from errors import OutOfOrder

    actor = ActorSettings(checkpoint_every_writes=40, checkpoint_every_seconds=3600.0, ordered_write_wait_seconds=4.0)
    cluster = make_cluster(idle_seconds=1.0, actor=actor)
    arun(cluster.create_memory(tenant, "patient", SMALL))
    began = time.monotonic()
    with pytest.raises(OutOfOrder, match="never-sent"):
        arun(cluster.observe(tenant, "patient", encode(["late"]), ["late"], request_id="w2",
                             after_request_id="never-sent"))
    assert time.monotonic() - began < 10  # its own wait, once: not cut off and retried
    assert wait_until(lambda: arun(cluster.live_actor_count()) == 0, timeout=60)  # idle now: it sleeps


def test_supervisor_restart_readopts_live_actors(make_cluster, arun, tenant):
    """The supervisor holds the live table in memory; if it dies, Ray restarts it and it adopts
    the memory actors still running, so the cap keeps counting them."""
    import ray

    cluster = make_cluster(max_live_actors=2, spare_actors_max=1)  # an evicted process is not kept
    for name in ("kept", "also-kept"):
        arun(cluster.create_memory(tenant, name, SMALL))
    supervisor = ray.get_actor("supervisor", namespace=cluster.settings.namespace)
    ray.kill(supervisor, no_restart=False)
    assert wait_until(lambda: arun(cluster.live_actor_count()) == 2, timeout=120)
    # Still capped: a third memory evicts one of the adopted actors.
    arun(cluster.create_memory(tenant, "third", SMALL))
    assert arun(cluster.live_actor_count()) == 2
    assert len(named_memory_actors(cluster.settings.namespace)) == 2
    # The spare alive before the restart is adopted, not duplicated.
    assert wait_until(lambda: len(spare_actors(cluster.settings.namespace)) == 1, timeout=300)
    assert len(spare_actors(cluster.settings.namespace)) == 1
    text = "kept memories survive a supervisor restart"
    assert arun(cluster.observe(tenant, "kept", encode([text]), [text]))["step"] == 1
