"""Recovery: a killed actor comes back from its checkpoint + WAL with the same weights,
acknowledged writes are never lost, and retried writes are never applied twice."""

from __future__ import annotations

from actors.wal import make_entry
from tests.cluster.helpers import SMALL, encode, kill_actor, reference_hash


def kill(cluster, tenant: str, name: str) -> None:
    kill_actor(cluster.settings.namespace, f"{tenant}/{name}")


def test_crash_after_250_of_500_loses_nothing(shared_cluster, arun, tenant, backend):
    # Auto-checkpoint every 40 writes: the kill at 250 forces checkpoint + WAL replay.
    cluster = shared_cluster(backend)
    arun(cluster.create_memory(tenant, "stream", SMALL))
    texts = [f"event {i}: sensor {i % 7} read {i * 13 % 101} units" for i in range(500)]
    vectors = encode(texts)
    acked = []
    for i, text in enumerate(texts):
        acked.append(arun(cluster.observe(tenant, "stream", vectors[i : i + 1], [text])))
        if len(acked) == 250:
            kill(cluster, tenant, "stream")
    assert [a["step"] for a in acked] == list(range(1, 501))
    stats = arun(cluster.stats(tenant, "stream"))
    expected = reference_hash(texts, vectors)
    assert stats["total_observations"] == 500
    assert stats["weight_hash"] == expected == acked[-1]["weight_hash"]


def test_retried_write_is_applied_once(shared_cluster, arun, tenant):
    cluster = shared_cluster()
    qname = f"{tenant}/idem"
    arun(cluster.create_memory(tenant, "idem", SMALL))
    texts = ["first note", "second note", "third note", "fourth note"]
    vectors = encode(texts)
    first = [arun(cluster.observe(tenant, "idem", vectors[i : i + 1], [texts[i]], request_id=f"r{i}"))
             for i in range(3)]

    # A retry of an acknowledged write returns the first answer, on the same actor...
    again = arun(cluster.observe(tenant, "idem", vectors[2:3], [texts[2]], request_id="r2"))
    assert again == {**first[2], "repeated": True} and not first[2]["repeated"]
    # ...and after a crash, when the new actor only knows it from WAL replay.
    kill(cluster, tenant, "idem")
    again = arun(cluster.observe(tenant, "idem", vectors[2:3], [texts[2]], request_id="r2"))
    assert again["step"] == 3 and arun(cluster.stats(tenant, "idem"))["total_observations"] == 3

    # The crash window: the actor logged write r3 in the WAL, then died before applying it.
    logged = cluster.storage.metadata.wal_read_after(qname, -1)
    entry = make_entry(4, vectors[3:4], [texts[3]], None, None, "r3", seq=1 + max(e["seq"] for e in logged))
    cluster.storage.metadata.wal_append(qname, entry)
    kill(cluster, tenant, "idem")
    retried = arun(cluster.observe(tenant, "idem", vectors[3:4], [texts[3]], request_id="r3"))
    assert retried["step"] == 4 and retried["repeated"]  # applied once, by the replay
    assert arun(cluster.stats(tenant, "idem"))["weight_hash"] == reference_hash(texts, vectors)

    # Once a checkpoint covers r3, a retry is still not re-applied.
    arun(cluster._routes().call(qname, "snapshot"))
    assert arun(cluster.hibernate(tenant, "idem"))
    retried = arun(cluster.observe(tenant, "idem", vectors[3:4], [texts[3]], request_id="r3"))
    stats = arun(cluster.stats(tenant, "idem"))
    assert retried["step"] == 4 and retried["repeated"] and stats["total_observations"] == 4

    # Four full batches later (1,024 observations: more than the history details), with the
    # log archived and the memory hibernated, the first write is still answered, not applied.
    batch = [f"later note {i}" for i in range(256)]
    for n in range(4):
        arun(cluster.observe(tenant, "idem", encode(batch), batch, request_id=f"batch-{n}"))
    arun(cluster.consolidate(tenant, "idem"))
    assert arun(cluster.hibernate(tenant, "idem"))
    again = arun(cluster.observe(tenant, "idem", vectors[:1], [texts[0]], request_id="r0"))
    assert again == {**first[0], "repeated": True}
    assert arun(cluster.stats(tenant, "idem"))["total_observations"] == 4 + 1024


def test_corrupt_newest_checkpoint_falls_back_to_the_one_before(shared_cluster, arun, tenant):
    cluster = shared_cluster()
    arun(cluster.create_memory(tenant, "frag", SMALL))
    texts = ["alpha", "beta", "gamma"]
    vectors = encode(texts)
    for i, text in enumerate(texts):
        arun(cluster.observe(tenant, "frag", vectors[i : i + 1], [text]))
    before = arun(cluster.stats(tenant, "frag"))
    arun(cluster._routes().call(f"{tenant}/frag", "snapshot"))  # auto-checkpoint at step 3; WAL kept back to step 0
    assert arun(cluster.hibernate(tenant, "frag"))
    infos = cluster.storage.metadata.list_checkpoints(f"{tenant}/frag")
    autos = [c for c in infos if c["tag"].startswith("auto@")]
    assert [c["step"] for c in autos] == [0, 3]
    path = cluster.storage.settings.checkpoint_dir / autos[-1]["object_key"]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))

    after = arun(cluster.stats(tenant, "frag"))
    assert after["weight_hash"] == before["weight_hash"] and after["total_observations"] == 3


def test_embedded_default_storage_recovers(make_cluster, arun, tenant):
    """No redis_url, no S3: the driver starts a Valkey; actors reach it through the resolved URL."""
    cluster = make_cluster("embedded")
    assert cluster.storage.embedded is not None
    arun(cluster.create_memory(tenant, "local", SMALL))
    texts = ["embedded one", "embedded two"]
    vectors = encode(texts)
    for i, text in enumerate(texts):
        arun(cluster.observe(tenant, "local", vectors[i : i + 1], [text]))
    kill(cluster, tenant, "local")
    stats = arun(cluster.stats(tenant, "local"))
    assert stats["total_observations"] == 2 and stats["weight_hash"] == reference_hash(texts, vectors)


def test_a_fork_of_a_damaged_tag_names_the_tag_and_leaves_nothing(shared_cluster, arun, tenant):
    import pytest

    from errors import CheckpointCorrupt
    from storage.cas import chunk_key

    cluster = shared_cluster()
    arun(cluster.create_memory(tenant, "src", SMALL))
    texts = ["one fact", "another fact"]
    vectors = encode(texts)
    for i, text in enumerate(texts):
        arun(cluster.observe(tenant, "src", vectors[i : i + 1], [text]))
    arun(cluster.checkpoint(tenant, "src", "v1"))
    (info,) = [c for c in cluster.storage.metadata.list_checkpoints(f"{tenant}/src") if c["tag"] == "v1"]
    for sha in cluster.storage.content.manifest(info["object_key"]).chunk_shas():  # every byte of v1 damaged
        path = cluster.storage.settings.checkpoint_dir / chunk_key(sha)
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointCorrupt) as caught:
        arun(cluster.fork(tenant, "src", "src-fork", source_tag="v1"))
    message = str(caught.value)
    assert "checkpoint 'v1' of memory src" in message and "src-fork" not in message and tenant not in message
    assert "src-fork" not in [m["name"] for m in arun(cluster.list_memories(tenant))["memories"]]
