"""Process reuse at the live cap: evicted memories hand their processes to the next ones, every
memory still answers as it should, and the pool shrinks back once the burst is over."""

from __future__ import annotations

import ray

from tests.cluster.helpers import SMALL, encode, reference_hash, spare_actors, wait_until

MEMORIES = 7


def test_a_burst_at_the_cap_recycles_processes_then_the_pool_shrinks(make_cluster, arun, tenant):
    cluster = make_cluster(max_live_actors=2, spare_actors=1, spare_actors_max=2, spare_idle_seconds=0.5,
                           idle_seconds=2.0)
    ns = cluster.settings.namespace
    facts = {f"user-{i}": f"user {i} prefers the colour number {i * 13}" for i in range(MEMORIES)}
    pids = set()
    for name, fact in facts.items():
        arun(cluster.create_memory(tenant, name, SMALL))
        arun(cluster.observe(tenant, name, encode([fact]), [fact]))
        pids.add(arun(cluster._routes().call(f"{tenant}/{name}", "where"))["pid"])
        assert arun(cluster.live_actor_count()) <= 2

    # 7 memories, at most 2 live and 2 idle processes at a time: evictions fed the next starts.
    assert len(pids) <= 4
    starts = ray.get(cluster._supervisor.starts.remote(), timeout=120)
    assert all(s["spare"] for s in starts[-(MEMORIES - 3):])  # the later ones bound a waiting process

    # Every memory, woken again in the released processes, is itself and nobody else.
    for name, fact in facts.items():
        stats = arun(cluster.stats(tenant, name))
        assert stats["total_observations"] == 1
        assert stats["weight_hash"] == reference_hash([fact], encode([fact]))
        answer = arun(cluster.infer(tenant, name, encode([fact])[0], fact, top_k=3))
        assert answer["response"].startswith(fact)
        assert all(p["pattern"] == fact for p in answer["attention_weights"]), answer

    # Idle: the memories hibernate, and the idle processes beyond spare_actors exit.
    assert wait_until(lambda: arun(cluster.live_actor_count()) == 0, timeout=120)
    assert wait_until(lambda: len(spare_actors(ns)) == 1, timeout=120)


def test_a_start_with_no_warm_process_takes_an_idle_memorys(make_cluster, arun, tenant):
    """No spares at all: the second memory's start hibernates the first (idle long enough) and
    runs in its process instead of starting one; the first wakes up whole."""
    import time

    cluster = make_cluster(spare_actors=0, spare_actors_max=1, reuse_idle_seconds=0.5)
    arun(cluster.create_memory(tenant, "first", SMALL))
    fact = "the first memory keeps bees"
    first_hash = arun(cluster.observe(tenant, "first", encode([fact]), [fact]))["weight_hash"]
    first_pid = arun(cluster._routes().call(f"{tenant}/first", "where"))["pid"]
    time.sleep(1.0)
    arun(cluster.create_memory(tenant, "second", SMALL))
    report = ray.get(cluster._supervisor.starts.remote(), timeout=120)[-1]
    assert report["qname"] == f"{tenant}/second" and report["spare"] and report.get("stole_from")
    assert arun(cluster._routes().call(f"{tenant}/second", "where"))["pid"] == first_pid
    assert arun(cluster.live_actor_count()) == 1
    assert arun(cluster.stats(tenant, "first"))["weight_hash"] == first_hash


def test_a_deleted_memorys_process_serves_the_next_memory_and_holds_nothing_of_it(make_cluster, arun, tenant):
    """Delete hands the process back as hibernation does (it killed it: every create-and-delete
    of a per-user memory cost a process start, and Ray keeps each dead worker's logs), without
    saving the deleted memory's unsaved writes anywhere."""
    cluster = make_cluster(spare_actors=0, spare_actors_max=1)
    arun(cluster.create_memory(tenant, "gone", SMALL))
    secret = "the deleted memory's door code is 4471"
    arun(cluster.observe(tenant, "gone", encode([secret]), [secret]))
    pid = arun(cluster._routes().call(f"{tenant}/gone", "where"))["pid"]
    started = ray.get(cluster._supervisor.processes.remote(), timeout=120)["started"]

    arun(cluster.delete_memory(tenant, "gone"))
    assert not cluster.storage.checkpoints.list(f"{tenant}/gone/")  # its unsaved write saved nowhere
    arun(cluster.create_memory(tenant, "next", SMALL))
    assert arun(cluster._routes().call(f"{tenant}/next", "where"))["pid"] == pid
    assert ray.get(cluster._supervisor.processes.remote(), timeout=120)["started"] == started
    stats = arun(cluster.stats(tenant, "next"))
    assert stats["total_observations"] == 0 and stats["episodes"] == 0
    answer = arun(cluster.infer(tenant, "next", encode([secret])[0], secret))
    assert secret not in answer["response"] and not answer["attention_weights"]
    fact = "the next memory keeps bees"
    observed = arun(cluster.observe(tenant, "next", encode([fact]), [fact]))
    assert observed["weight_hash"] == reference_hash([fact], encode([fact]))  # as a fresh process's
