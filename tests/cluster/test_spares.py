"""Warm spare actors: forks and rehydrations bind an already started actor, which then serves
exactly that memory (correct and independent weights); a dead spare falls back to a cold start;
spare_actors=0 turns them off."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.helpers import SMALL, encode, named_memory_actors, reference_hash, spare_actors, wait_until


def supervisor_call(cluster, method: str) -> Any:
    import ray

    return ray.get(getattr(cluster._supervisor, method).remote(), timeout=120)


def wait_for_spare(cluster) -> None:
    assert wait_until(lambda: supervisor_call(cluster, "spares_ready") >= 1, timeout=300), "no spare warmed up"


def last_start(cluster, qname: str) -> dict:
    return [r for r in supervisor_call(cluster, "starts") if r["qname"] == qname][-1]


def pid_of(arun, cluster, tenant: str, name: str) -> int:
    return arun(cluster._routes().call(f"{tenant}/{name}", "where"))["pid"]


def test_fork_and_rehydration_use_the_warm_spare(make_cluster, arun, tenant):
    cluster = make_cluster(spare_actors=1)
    ns = cluster.settings.namespace
    arun(cluster.create_memory(tenant, "base", SMALL))
    base_texts = ["the base knows tides", "the base knows winds"]
    for i, text in enumerate(base_texts):
        arun(cluster.observe(tenant, "base", encode(base_texts)[i : i + 1], [text]))
    base_hash = arun(cluster.stats(tenant, "base"))["weight_hash"]

    wait_for_spare(cluster)
    (spare_name,) = spare_actors(ns)
    fork = arun(cluster.fork(tenant, "base", "alice"))
    assert fork["new_hash"] == base_hash
    report = last_start(cluster, f"{tenant}/alice")
    assert report["spare"] and "imports" not in report["timings"]
    assert spare_name not in spare_actors(ns)  # bound now, so no longer a spare
    assert pid_of(arun, cluster, tenant, "alice") != pid_of(arun, cluster, tenant, "base")

    # The fork learns on its own; the source is untouched; both match in-process references.
    alice_texts = ["alice keeps bees"]
    arun(cluster.observe(tenant, "alice", encode(alice_texts), alice_texts))
    alice_hash = arun(cluster.stats(tenant, "alice"))["weight_hash"]
    assert alice_hash == reference_hash(base_texts + alice_texts, encode(base_texts + alice_texts))
    assert arun(cluster.stats(tenant, "base"))["weight_hash"] == base_hash == reference_hash(
        base_texts, encode(base_texts))

    # A replacement spare warms up; rehydration binds it and finds the same weights.
    wait_for_spare(cluster)
    assert arun(cluster.hibernate(tenant, "alice"))
    assert arun(cluster.stats(tenant, "alice"))["weight_hash"] == alice_hash
    assert last_start(cluster, f"{tenant}/alice")["spare"]
    assert named_memory_actors(ns) == sorted([f"{tenant}/alice", f"{tenant}/base"])
    assert arun(cluster.live_actor_count()) == 2  # spares are not memories


def test_dead_spare_falls_back_to_a_cold_start(make_cluster, arun, tenant):
    import ray

    cluster = make_cluster(spare_actors=1)
    ns = cluster.settings.namespace
    wait_for_spare(cluster)
    (spare_name,) = spare_actors(ns)
    ray.kill(ray.get_actor(spare_name, namespace=ns))
    assert wait_until(lambda: spare_name not in spare_actors(ns), timeout=60)

    arun(cluster.create_memory(tenant, "after", SMALL))
    report = last_start(cluster, f"{tenant}/after")
    assert not report["spare"] and "imports" in report["timings"]
    texts = ["started cold after all"]
    assert arun(cluster.observe(tenant, "after", encode(texts), texts))["step"] == 1
    wait_for_spare(cluster)  # and the pool refills


def test_no_spares_when_turned_off(make_cluster, arun, tenant):
    cluster = make_cluster(spare_actors=0)
    arun(cluster.create_memory(tenant, "plain", SMALL))
    assert not last_start(cluster, f"{tenant}/plain")["spare"]
    assert spare_actors(cluster.settings.namespace) == []
    assert supervisor_call(cluster, "spares_ready") == 0


@pytest.mark.parametrize("value", [-1, 257])
def test_spare_count_is_validated(value):
    from pydantic import ValidationError

    from cluster import ClusterSettings

    with pytest.raises(ValidationError, match="spare_actors"):
        ClusterSettings(spare_actors=value)
