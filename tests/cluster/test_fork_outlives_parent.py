"""A fork shares its parent's checkpoint bytes (content-addressed chunks); deleting the parent
and collecting garbage must leave every byte the fork still names."""

from __future__ import annotations

from cluster.collector import collect_once
from tests.cluster.helpers import SMALL, encode


def test_a_fork_outlives_its_deleted_parent_and_a_collection(make_cluster, arun, tenant):
    cluster = make_cluster()
    texts = [f"note {i}: the {w} shelf holds box {i * 3 % 11}" for i, w in
             enumerate(["red", "blue", "green", "grey"] * 30)]
    vectors = encode(texts)
    arun(cluster.create_memory(tenant, "parent", SMALL))
    arun(cluster.observe(tenant, "parent", vectors[:100], texts[:100]))
    arun(cluster.checkpoint(tenant, "parent", "v1"))
    arun(cluster.fork(tenant, "parent", "child", source_tag="v1"))
    learned = arun(cluster.observe(tenant, "child", vectors[100:101], texts[100:101]))
    assert arun(cluster.hibernate(tenant, "child"))  # its state is now only in storage

    arun(cluster.delete_memory(tenant, "parent"))
    metadata = cluster.storage.metadata  # every write's claim aged past the grace: only names count now
    claims = metadata.keys.cas("claims")
    metadata.client.zadd(claims, {sha: 0 for sha in metadata.client.zrange(claims, 0, -1)})
    report = collect_once(cluster.storage.settings, grace_seconds=60.0)
    assert report.deleted > 0  # the parent's own bytes (its auto-checkpoint's head) went

    stats = arun(cluster.stats(tenant, "child"))  # wakes: the shared chunks + its log tail
    assert (stats["total_observations"], stats["weight_hash"]) == (101, learned["weight_hash"])
    answer = arun(cluster.infer(tenant, "child", vectors[5], texts[5], top_k=1))
    assert answer["response"] == texts[5]
