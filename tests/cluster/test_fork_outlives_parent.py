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


def test_a_new_memory_under_a_deleted_parents_name_has_none_of_its_forks(make_cluster, arun, tenant):
    """The name is reused, not the lineage: listings mark the old fork's parent deleted, and a
    forget with `forks` on the new memory leaves the old fork alone."""
    from tests.cluster.test_forget import wait_job

    cluster = make_cluster()
    texts = ["alpha centauri is the nearest star system", "the moon has no air", "filler one", "filler two"]
    vectors = encode(texts)
    arun(cluster.create_memory(tenant, "base", SMALL))
    arun(cluster.observe(tenant, "base", vectors[:2], texts[:2]))
    arun(cluster.checkpoint(tenant, "base", "v1"))
    arun(cluster.fork(tenant, "base", "kid", source_tag="v1"))
    arun(cluster.fork(tenant, "base", "kid-now"))  # a fork of the live state, too
    before = {k: arun(cluster.stats(tenant, k))["weight_hash"] for k in ("kid", "kid-now")}

    arun(cluster.delete_memory(tenant, "base"))
    arun(cluster.create_memory(tenant, "base", SMALL))
    arun(cluster.observe(tenant, "base", vectors[2:], texts[2:]))
    arun(cluster.fork(tenant, "base", "new-kid"))
    for view in (arun(cluster.list_memories(tenant)), arun(cluster.lineage(tenant))):
        marks = {m["name"]: m["parent_deleted"] for m in view["memories"] if m["parent"]}
        assert marks == {"kid": True, "kid-now": True, "new-kid": False}

    job = arun(cluster.forget(tenant, "base", {"selector": {"text": texts[2]}, "forks": True}, {"key": "test"}))
    done = wait_job(arun, cluster, tenant, "base", job["job_id"])
    assert done["status"] == "done" and [f["name"] for f in done["report"]["forks"]] == ["new-kid"]
    for kid, weight_hash in before.items():
        assert arun(cluster.stats(tenant, kid))["weight_hash"] == weight_hash
        assert arun(cluster.infer(tenant, kid, vectors[0], texts[0], top_k=1))["response"] == texts[0]
