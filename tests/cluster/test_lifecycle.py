"""Create / list / delete, checkpoints, restore and fork through MemoryCluster, on both
production storage shapes (Valkey + local checkpoints, Valkey + weed S3)."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster import creating
from cluster.creating import Creations
from errors import (Busy, CheckpointConflict, CheckpointNotFound, InvalidInput, MemoryExists, MemoryNotFound,
                    MetadataError, Unavailable)
from storage.codec import dumps_json
from tests.cluster.helpers import SMALL, encode, kill_actor



def feed(arun, cluster, tenant, name, texts):
    vectors = encode(texts)
    return [arun(cluster.observe(tenant, name, vectors[i : i + 1], [t])) for i, t in enumerate(texts)]


def kill(cluster, tenant, name):
    kill_actor(cluster.settings.namespace, f"{tenant}/{name}")


def test_create_list_config_delete(shared_cluster, arun, tenant):
    T, cluster = tenant, shared_cluster()
    created = arun(cluster.create_memory(T, "notes", SMALL))
    assert created["name"] == "notes" and len(created["weight_hash"]) == 64 and created["weight_parameters"] > 0
    with pytest.raises(MemoryExists):
        arun(cluster.create_memory(T, "notes", SMALL))
    stats = arun(cluster.stats(T, "notes"))  # create answers from the start itself, the same
    assert (created["weight_hash"], created["weight_parameters"]) == (stats["weight_hash"], stats["weight_parameters"])
    feed(arun, cluster, T, "notes", ["the sky is blue", "grass is green"])
    _, live = arun(cluster._routes().start(f"{T}/notes"))  # already live: the summary of now
    assert (live["step"], live["weight_hash"]) == (2, arun(cluster.stats(T, "notes"))["weight_hash"])

    listed = arun(cluster.list_memories(T))
    assert listed == {"memories": [{"name": "notes", "total_observations": 2, "live": True, "being_created": False,
                                    "parent": None, "parent_deleted": False}],
                      "next_cursor": None}
    assert arun(cluster.list_memories(T + "x")) == {"memories": [], "next_cursor": None}
    assert arun(cluster.memory_config(T, "notes"))["encoder"] == "hash"
    history = arun(cluster.history(T, "notes"))["observations"]
    assert [h["text"] for h in history] == ["the sky is blue", "grass is green"]
    assert [h["step"] for h in history] == [1, 2]

    assert arun(cluster.delete_memory(T, "notes")) == {"deleted": True, "name": "notes"}
    assert arun(cluster.list_memories(T)) == {"memories": [], "next_cursor": None}
    assert cluster.storage.checkpoints.list(f"{T}/notes/") == []
    with pytest.raises(MemoryNotFound):
        arun(cluster.stats(T, "notes"))
    # The name is free again, and the new memory starts from scratch.
    again = arun(cluster.create_memory(T, "notes", SMALL))
    assert again["weight_hash"] == created["weight_hash"]
    assert arun(cluster.stats(T, "notes"))["total_observations"] == 0


def test_errors_for_bad_names_unknown_memories_and_tags(shared_cluster, arun, tenant):
    T, cluster = tenant, shared_cluster()
    for bad in ("../x", "x" * 300, "Notes"):
        with pytest.raises(InvalidInput):
            arun(cluster.create_memory(T, bad, SMALL))
    with pytest.raises(InvalidInput, match="unknown memory config"):
        arun(cluster.create_memory(T, "cfg", {"encoder": "hash", "bogus": 1}))
    assert arun(cluster.list_memories(T)) == {"memories": [], "next_cursor": None}

    vec = encode(["x"])
    for call in (cluster.observe(T, "ghost", vec, ["x"]), cluster.stats(T, "ghost"),
                 cluster.delete_memory(T, "ghost"), cluster.fork(T, "ghost", "copy"),
                 cluster.checkpoint(T, "ghost", "v1"), cluster.memory_config(T, "ghost"),
                 cluster.list_checkpoints(T, "ghost")):
        with pytest.raises(MemoryNotFound):
            arun(call)

    arun(cluster.create_memory(T, "real", SMALL))
    with pytest.raises(CheckpointNotFound):
        arun(cluster.restore(T, "real", "nope"))
    with pytest.raises(CheckpointNotFound):
        arun(cluster.fork(T, "real", "copy", source_tag="nope"))
    assert [m["name"] for m in arun(cluster.list_memories(T))["memories"]] == ["real"]
    with pytest.raises(InvalidInput):
        arun(cluster.observe(T, "real", encode(["a", "b"]), ["only one text"]))
    with pytest.raises(InvalidInput):
        arun(cluster.restore(T, "real", "auto@000000000001"))  # internal tags are not addressable
    # A refused write never reaches the WAL or the step counter.
    assert cluster.storage.metadata.wal_length(f"{T}/real") == 0
    assert arun(cluster.stats(T, "real"))["total_observations"] == 0


def test_checkpoints_listed_without_internal_ones_and_tags_unique(shared_cluster, arun, tenant):
    T, cluster = tenant, shared_cluster()
    arun(cluster.create_memory(T, "m", SMALL))
    feed(arun, cluster, T, "m", ["alpha fact", "beta fact"])
    saved = arun(cluster.checkpoint(T, "m", "v1.0", "first"))
    assert saved["checkpoint_id"] == "m:v1.0" and saved["size_mb"] > 0
    with pytest.raises(CheckpointConflict):
        arun(cluster.checkpoint(T, "m", "v1.0"))
    listed = arun(cluster.list_checkpoints(T, "m"))["checkpoints"]
    assert [(c["tag"], c["description"], c["step"]) for c in listed] == [("v1.0", "first", 2)]
    assert listed[0]["weight_hash"] == saved["weight_hash"]
    # The initial auto-checkpoint exists but is internal.
    all_tags = [c["tag"] for c in cluster.storage.metadata.list_checkpoints(f"{T}/m")]
    assert any(tag.startswith("auto@") for tag in all_tags)


def test_restore_brings_back_the_checkpoint_hash_and_survives_a_crash(shared_cluster, arun, tenant, backend):
    T, cluster = tenant, shared_cluster(backend)
    arun(cluster.create_memory(T, "r", SMALL))
    feed(arun, cluster, T, "r", [f"before checkpoint {i}" for i in range(5)])
    saved = arun(cluster.checkpoint(T, "r", "stable"))
    feed(arun, cluster, T, "r", [f"after checkpoint {i}" for i in range(50)])
    assert arun(cluster.stats(T, "r"))["weight_hash"] != saved["weight_hash"]

    restored = arun(cluster.restore(T, "r", "stable"))
    assert restored == {"restored": True, "weight_hash": saved["weight_hash"], "learning_since_checkpoint": 50}
    stats = arun(cluster.stats(T, "r"))
    assert stats["weight_hash"] == saved["weight_hash"] and stats["total_observations"] == 5
    assert arun(cluster.list_memories(T))["memories"][0]["total_observations"] == 5

    # Writes after the restore, then a crash: recovery must not replay the pre-restore writes.
    after = feed(arun, cluster, T, "r", ["post restore one", "post restore two"])
    kill(cluster, T, "r")
    stats = arun(cluster.stats(T, "r"))
    assert stats["weight_hash"] == after[-1]["weight_hash"] and stats["total_observations"] == 7


def test_fork_independence_and_lineage(shared_cluster, arun, tenant, backend):
    T, cluster = tenant, shared_cluster(backend)
    arun(cluster.create_memory(T, "base", SMALL))
    feed(arun, cluster, T, "base", ["shared fact one", "shared fact two", "shared fact three"])
    base_hash = arun(cluster.stats(T, "base"))["weight_hash"]
    tagged = arun(cluster.checkpoint(T, "base", "v1"))
    feed(arun, cluster, T, "base", ["base learns more"])

    alice = arun(cluster.fork(T, "base", "alice.base", source_tag="v1"))
    bob = arun(cluster.fork(T, "base", "bob.base"))
    assert alice == {"forked": True, "source_hash": tagged["weight_hash"], "new_hash": tagged["weight_hash"]}
    assert bob["forked"] and bob["source_hash"] == bob["new_hash"] != base_hash
    with pytest.raises(MemoryExists):
        arun(cluster.fork(T, "base", "bob.base"))

    hashes = {n: arun(cluster.stats(T, n))["weight_hash"] for n in ("base", "alice.base", "bob.base")}
    feed(arun, cluster, T, "alice.base", ["alice likes tea", "alice lives in Paris"])
    after = {n: arun(cluster.stats(T, n))["weight_hash"] for n in ("base", "alice.base", "bob.base")}
    assert after["alice.base"] != hashes["alice.base"]
    assert after["base"] == hashes["base"] and after["bob.base"] == hashes["bob.base"]
    feed(arun, cluster, T, "bob.base", ["bob likes coffee"])
    assert arun(cluster.stats(T, "alice.base"))["weight_hash"] == after["alice.base"]
    assert arun(cluster.stats(T, "base"))["weight_hash"] == hashes["base"]
    assert arun(cluster.stats(T, "alice.base"))["total_observations"] == 5

    lineage = {m["name"]: m for m in arun(cluster.lineage(T))["memories"]}
    assert lineage["alice.base"]["parent"] == "base" and lineage["alice.base"]["source_tag"] == "v1"
    assert lineage["bob.base"]["parent"] == "base" and lineage["bob.base"]["source_tag"] is None
    assert lineage["base"]["parent"] is None and all(m["live"] for m in lineage.values())
    # Forks keep their own checkpoints: deleting the parent leaves them working.
    arun(cluster.delete_memory(T, "base"))
    assert arun(cluster.stats(T, "bob.base"))["total_observations"] == 5


def test_reads_and_consolidate_through_the_actor(shared_cluster, arun, tenant):
    T, cluster = tenant, shared_cluster()
    arun(cluster.create_memory(T, "q", SMALL))
    texts = ["paris is the capital of france", "the mitochondria is the powerhouse of the cell"]
    feed(arun, cluster, T, "q", texts)
    vec = encode([texts[0]])[0]
    answer = arun(cluster.infer(T, "q", vec, texts[0], top_k=2))
    assert "paris" in answer["response"] and answer["attention_weights"]
    assert arun(cluster.surprise(T, "q", vec, texts[0]))["score"] < 0.5
    assert arun(cluster.attention_map(T, "q", vec, texts[0]))["attention_weights"]
    assert arun(cluster.explain(T, "q", top_k=2))["patterns"]
    consolidated = arun(cluster.consolidate(T, "q"))
    assert {"patterns_merged", "memory_compressed_by", "stability_score"} <= set(consolidated)
    # Consolidation is not in the WAL; it is checkpointed at once, so a crash keeps it.
    before = arun(cluster.stats(T, "q"))
    kill(cluster, T, "q")
    assert arun(cluster.stats(T, "q"))["weight_hash"] == before["weight_hash"]


def test_a_fork_cut_short_while_redis_is_down_leaves_no_memory_behind(shared_cluster, arun, tenant, monkeypatch):
    """The fork's actor started, then Redis went away before the creation was finished and
    while it was being undone: the record stays marked as being created, the name answers 503
    (not 409 for a memory holding the wrong state), and once Redis answers again the clean-up
    lands by itself, so the retried fork makes the memory the source promised."""
    T, cluster = tenant, shared_cluster()
    arun(cluster.create_memory(T, "base", SMALL))
    feed(arun, cluster, T, "base", ["one fact", "another fact"])
    tagged = arun(cluster.checkpoint(T, "base", "v1"))
    meta, qname = cluster.storage.metadata, f"{T}/user.1"
    assert "creating" not in meta.get_memory(f"{T}/base")  # a whole memory carries no mark

    def down(*args, **kwargs):
        raise MetadataError("Redis/Valkey did not answer in time")

    monkeypatch.setattr(meta, "finish_creating", down)
    monkeypatch.setattr(meta, "delete_memory", down)
    monkeypatch.setattr(creating, "FINISH_RETRY_DELAYS", ())  # Redis stays down: no waiting for it
    monkeypatch.setattr(creating, "OTHER_CREATION_WAIT_SECONDS", 0.5)  # nor for the creation to end
    with pytest.raises(MetadataError):
        arun(cluster.fork(T, "base", "user.1", source_tag="v1"))
    assert meta.get_memory(qname)["creating"]
    with pytest.raises(MetadataError):  # this gateway knows it failed: it clears it at once, but Redis is down
        arun(cluster.fork(T, "base", "user.1", source_tag="v1"))
    with pytest.raises(Busy, match="being created"):  # another gateway cannot tell it from one under way
        arun(Creations(cluster).check_free(qname))

    monkeypatch.undo()  # Redis is back: the background clean-up frees the name
    deadline = time.monotonic() + 30
    while meta.memory_exists(qname) and time.monotonic() < deadline:
        arun(asyncio.sleep(0.5))
    assert not meta.memory_exists(qname) and cluster.storage.checkpoints.list(f"{qname}/") == []
    forked = arun(cluster.fork(T, "base", "user.1", source_tag="v1"))
    assert forked["new_hash"] == tagged["weight_hash"] == arun(cluster.stats(T, "user.1"))["weight_hash"]
    assert "creating" not in meta.get_memory(qname)


def test_a_creation_whose_creator_died_is_cleared_by_the_next_create_once_stale(shared_cluster, arun, tenant,
                                                                               monkeypatch):
    monkeypatch.setattr("cluster.creating.OTHER_CREATION_WAIT_SECONDS", 0.5)  # it never ends: no waiting for it
    T, cluster = tenant, shared_cluster()
    meta, qname = cluster.storage.metadata, f"{T}/orphan"
    creating = {"attempt": "a-gateway-that-died", "since": time.time()}
    meta.create_memory(qname, {"tenant": T, "name": qname, "config": {}, "creating": creating})
    with pytest.raises(Busy):
        arun(cluster.create_memory(T, "orphan", SMALL))
    # Nor is it served: its actor would start from the config before the creator wrote its state.
    # ...and says how long a dead creator's mark can hold the name
    with pytest.raises(Busy, match=r"being created.*freed within \d+ s"):
        arun(cluster.stats(T, "orphan"))
    with pytest.raises(Busy, match="being created"):
        feed(arun, cluster, T, "orphan", ["a write meant for a memory not yet whole"])
    assert qname not in arun(cluster._supervisor.live.remote())
    listed = {m["name"]: m for m in arun(cluster.list_memories(T))["memories"]}
    assert listed["orphan"]["being_created"] is True
    assert [m["being_created"] for m in arun(cluster.lineage(T, prefix="orphan"))["memories"]] == [True]
    with pytest.raises(Busy, match="being created.*delete it once.*freed within"):  # its creator would write into the next one
        arun(cluster.delete_memory(T, "orphan"))
    with pytest.raises(MemoryNotFound):  # a clean-up only ever deletes its own attempt's record
        meta.delete_memory(qname, creating="another-attempt")
    meta.client.hset(meta.keys.registry(), qname, dumps_json(
        {**meta.get_memory(qname), "creating": {**creating, "since": time.time() - 3600}}))
    with pytest.raises(MemoryNotFound):  # stale: a creation that never became a memory
        arun(cluster.stats(T, "orphan"))
    assert "orphan" not in [m["name"] for m in arun(cluster.list_memories(T))["memories"]]
    assert arun(cluster.lineage(T, prefix="orphan"))["memories"] == []
    created = arun(cluster.create_memory(T, "orphan", SMALL))
    assert created["weight_hash"] == arun(cluster.stats(T, "orphan"))["weight_hash"]
    with pytest.raises(MemoryExists):
        arun(cluster.create_memory(T, "orphan", SMALL))


def test_a_creation_step_redis_applied_but_did_not_answer_is_neither_lost_nor_left_marked(
        shared_cluster, arun, tenant, monkeypatch):
    """Redis stored the record (or dropped its mark) and the answer was lost on the way back.
    The create's resend finds its own record and goes on; a lost answer to the last step is
    retried (the swap is idempotent) instead of failing a memory that is whole; a create that
    fails after its record landed clears it at once, not 5 minutes later."""
    T, cluster = tenant, shared_cluster()
    meta = cluster.storage.metadata
    real_create, real_finish = meta.create_memory, meta.finish_creating
    lost = {"create": 0, "finish": 0}

    def applied_then(error, step, real):
        def call(*args, **kwargs):
            answer = real(*args, **kwargs)
            if lost[step]:
                lost[step] -= 1
                raise error
            return answer
        return call

    lost.update(create=1, finish=1)
    monkeypatch.setattr(meta, "create_memory", applied_then(MemoryExists("resent: already there"), "create",
                                                            real_create))
    monkeypatch.setattr(meta, "finish_creating", applied_then(MetadataError("connection lost"), "finish", real_finish))
    made = arun(cluster.create_memory(T, "resent", SMALL))
    assert made["weight_hash"] == arun(cluster.stats(T, "resent"))["weight_hash"]
    assert "creating" not in meta.get_memory(f"{T}/resent") and lost == {"create": 0, "finish": 0}

    lost["create"] = 1
    monkeypatch.setattr(meta, "create_memory", applied_then(MetadataError("connection lost"), "create", real_create))
    with pytest.raises(MetadataError):
        arun(cluster.create_memory(T, "unanswered", SMALL))
    assert not meta.memory_exists(f"{T}/unanswered")  # cleared at once: the name is free
    assert arun(cluster.create_memory(T, "unanswered", SMALL))["weight_hash"] == made["weight_hash"]


def test_a_stale_creation_is_cleared_by_one_gateway_of_two_and_can_be_deleted(shared_cluster, arun, tenant,
                                                                              monkeypatch):
    """Two gateways find the same stale mark at once: one claims the record (one swap) and
    releases its leftovers; the other does not release whatever takes the name next."""
    T, cluster = tenant, shared_cluster()
    meta = cluster.storage.metadata
    stale = {"attempt": "a-gateway-that-died", "since": time.time() - 3600}
    released = []
    real_release = cluster._release

    async def counted(qname):
        released.append(qname)
        await real_release(qname)

    async def both_gateways_check(qname):
        return await asyncio.gather(Creations(cluster).check_free(qname), Creations(cluster).check_free(qname),
                                    return_exceptions=True)

    monkeypatch.setattr(cluster, "_release", counted)
    for round_ in range(3):
        qname = f"{T}/stale-{round_}"
        meta.create_memory(qname, {"tenant": T, "name": qname, "config": {}, "creating": stale})
        answers = arun(both_gateways_check(qname))
        assert all(a is None or isinstance(a, Busy) for a in answers), answers
        assert released.count(qname) == 1 and not meta.memory_exists(qname)
    qname = f"{T}/stale-deleted"
    meta.create_memory(qname, {"tenant": T, "name": qname, "config": {}, "creating": stale})
    assert arun(cluster.delete_memory(T, "stale-deleted")) == {"deleted": True, "name": "stale-deleted"}
    assert not meta.memory_exists(qname) and released.count(qname) == 1


def test_of_concurrent_creations_of_one_name_one_is_made_and_the_others_are_told_it_exists(shared_cluster, arun,
                                                                                         tenant):
    """The others were told 503 busy ("being created by another call"), and only a retry said 409."""
    T, cluster = tenant, shared_cluster()

    async def four_at_once() -> list:
        creates = [cluster.create_memory(T, "contested", SMALL) for _ in range(3)]
        forks = [cluster.fork(T, "base-of-contested", "contested")]
        return await asyncio.gather(*creates, *forks, return_exceptions=True)

    arun(cluster.create_memory(T, "base-of-contested", SMALL))
    answers = arun(four_at_once())
    made = [a for a in answers if isinstance(a, dict)]
    assert len(made) == 1 and all(isinstance(a, MemoryExists) for a in answers if a not in made), answers


def test_a_memory_is_not_served_before_its_creation_is_whole(shared_cluster, arun, tenant, monkeypatch):
    """Not even by the gateway that started its actor: a write acknowledged then would be lost
    if the creation's last step failed."""
    T, cluster = tenant, shared_cluster()
    real_finish, seen = cluster._creations.finish, []

    async def finish_after_a_call(registered):
        try:
            seen.append(await cluster.stats(T, "young"))
        except Busy as exc:
            seen.append(exc)
        await real_finish(registered)

    monkeypatch.setattr(cluster._creations, "finish", finish_after_a_call)
    made = arun(cluster.create_memory(T, "young", SMALL))
    assert len(seen) == 1 and isinstance(seen[0], Busy), seen
    assert arun(cluster.stats(T, "young"))["weight_hash"] == made["weight_hash"]


def test_a_creation_undone_at_its_deadline_lets_its_seed_finish_first(shared_cluster, arun, tenant, monkeypatch):
    """An image import whose first checkpoint is still being written (in a thread, which cannot
    be stopped) when the creation's deadline undoes it: the clean-up waits for it, so nothing of
    it is left in the store or lands in the next memory of that name."""
    from actors.durability import Checkpoints
    from cluster import ExportedState

    T, cluster = tenant, shared_cluster()
    arun(cluster.create_memory(T, "source", SMALL))
    feed(arun, cluster, T, "source", ["an image of a memory that has learned one thing"])
    image = arun(cluster.export_state(T, "source"))
    real_save, seeded = Checkpoints.save_auto, []

    def slow_save(self, *args, **kwargs):  # the gateway's seed only (actors run elsewhere)
        time.sleep(1.5)
        seeded.append(real_save(self, *args, **kwargs))
        return seeded[-1]

    monkeypatch.setattr(Checkpoints, "save_auto", slow_save)
    monkeypatch.setattr(Creations, "deadline", property(lambda self: 0.5))
    with pytest.raises(Unavailable, match="was undone"):
        arun(cluster.import_state(T, "imported", ExportedState(**vars(image))))
    assert len(seeded) == 1  # written before the clean-up ...
    assert cluster.storage.checkpoints.list(f"{T}/imported/") == []  # ... and cleared by it
    monkeypatch.undo()  # the real seed and deadline again
    arun(cluster.create_memory(T, "imported", SMALL))
    own = cluster.storage.metadata.list_checkpoints(f"{T}/imported")
    time.sleep(1.5)  # past the moment a seed left running would have written
    assert cluster.storage.metadata.list_checkpoints(f"{T}/imported") == own
    assert seeded[0]["object_key"] not in [c["object_key"] for c in own]


def test_the_sweep_clears_creations_whose_creator_died_and_nothing_else(shared_cluster, arun, tenant):
    """Without waiting for someone to create or delete the name: its quota slot, record and
    objects go. A creation still running and a whole memory are left alone."""
    T, cluster = tenant, shared_cluster()
    meta, store = cluster.storage.metadata, cluster.storage.checkpoints
    assert cluster._creations._sweeper is not None and not cluster._creations._sweeper.done()
    arun(cluster.create_memory(T, "whole", SMALL))
    for name, age in (("dead", 3600), ("running", 0)):
        meta.create_memory(f"{T}/{name}", {"tenant": T, "name": f"{T}/{name}", "config": {},
                                          "creating": {"attempt": f"{name}-attempt", "since": time.time() - age}})
        store.put(f"{T}/{name}/seed.ckpt", b"a first checkpoint half written")
    quota_before = meta.count_memories(T)
    cleared = [name for name in arun(cluster._creations.sweep()) if name.startswith(f"{T}/")]
    assert cleared == [f"{T}/dead"]
    assert not meta.memory_exists(f"{T}/dead") and store.list(f"{T}/dead/") == []
    assert meta.count_memories(T) == quota_before - 1
    assert meta.memory_exists(f"{T}/running") and store.list(f"{T}/running/") != []
    assert arun(cluster.stats(T, "whole"))["total_observations"] == 0
    assert not [name for name in arun(cluster._creations.sweep()) if name.startswith(f"{T}/")]


def test_a_seed_that_outlasts_the_wait_is_cleared_once_it_ends(shared_cluster, arun, tenant, monkeypatch):
    """The clean-up waits for the seed thread only so long; the name then stays busy until the
    thread ends, and the creation is cleared in the background after it."""
    from actors.durability import Checkpoints
    from cluster import ExportedState

    T, cluster = tenant, shared_cluster()
    arun(cluster.create_memory(T, "source", SMALL))
    image = arun(cluster.export_state(T, "source"))
    real_save, seeded = Checkpoints.save_auto, []

    def slow_save(self, *args, **kwargs):
        time.sleep(2.0)
        seeded.append(real_save(self, *args, **kwargs))
        return seeded[-1]

    monkeypatch.setattr(Checkpoints, "save_auto", slow_save)
    monkeypatch.setattr(Creations, "deadline", property(lambda self: 0.3))
    monkeypatch.setattr(Creations, "settle_seconds", 0.2)
    monkeypatch.setattr(creating, "OTHER_CREATION_WAIT_SECONDS", 0.5)  # asked before the seed ends
    with pytest.raises(Unavailable, match="was undone"):
        arun(cluster.import_state(T, "late", ExportedState(**vars(image))))
    assert seeded == []
    with pytest.raises(Busy):  # not free while its seed may still write
        arun(cluster.create_memory(T, "late", SMALL))
    deadline = time.monotonic() + 30
    while cluster.storage.metadata.memory_exists(f"{T}/late") and time.monotonic() < deadline:
        arun(asyncio.sleep(0.2))  # the background clean-up runs on this loop
    assert len(seeded) == 1
    assert not cluster.storage.metadata.memory_exists(f"{T}/late")
    assert cluster.storage.checkpoints.list(f"{T}/late/") == []
    monkeypatch.undo()
    arun(cluster.create_memory(T, "late", SMALL))


def test_a_deleted_memorys_texts_leave_the_append_only_file(shared_cluster, arun, tenant, monkeypatch):
    """Redis keeps every command in its append-only file until it rewrites it: a delete has it
    rewritten soon after (one rewrite for every delete of a few seconds), so the texts leave
    the disk, not only the dataset."""
    from pathlib import Path

    import cluster.cluster as cluster_module

    monkeypatch.setattr(cluster_module, "AOF_REWRITE_DELAY", 0.5)
    cluster = shared_cluster()
    client = cluster.storage.metadata.client
    folder = Path(client.config_get("dir")["dir"])
    secret = f"ZQX-{tenant}-the vault code is 8841"
    arun(cluster.create_memory(tenant, "doomed", SMALL))
    arun(cluster.observe(tenant, "doomed", encode([secret]), [secret]))

    def on_disk() -> bool:
        return any(secret.encode() in path.read_bytes() for path in folder.rglob("*.aof"))

    assert client.info("persistence")["aof_enabled"] and on_disk()
    arun(cluster.delete_memory(tenant, "doomed"))
    arun(asyncio.sleep(1.0))  # the rewrite is asked for after the delay

    def rewritten() -> bool:
        return not client.info("persistence")["aof_rewrite_in_progress"] and not on_disk()

    deadline = time.monotonic() + 60
    while not rewritten() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not on_disk()
