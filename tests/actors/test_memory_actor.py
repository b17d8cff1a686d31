"""MemoryActor, in process: WAL before apply, idempotent writes, checkpoint cadence and WAL
trimming, hibernation refusing writes, restore as a recovery barrier."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from actors import MemoryActor, normalize_config
from actors.code_id import CODE_ID
from errors import (CheckpointConflict, CheckpointNotFound, InvalidInput, MemoryNotFound, MetadataError,
                    RequestIdReused, Superseded, Unavailable)
from storage import shown
from tests.actors.conftest import register
from tests.cluster.helpers import SMALL, encode, reference_hash, wait_until

Q = "acme/notes"


def autos(storage, qname=Q):
    return [c for c in storage.metadata.list_checkpoints(qname) if c["tag"].startswith("auto@")]


def wal_steps(storage, qname=Q):
    return [e["step"] for e in storage.metadata.wal_read_after(qname, 0)]


def test_start_writes_the_initial_checkpoint(storage, make_actor):
    actor = make_actor(storage, Q)
    assert [c["step"] for c in autos(storage)] == [0]
    assert actor.stats()["total_observations"] == 0
    assert actor.start()["step"] == 0  # idempotent
    assert [c["step"] for c in autos(storage)] == [0]


def test_unregistered_memory_does_not_start(local_storage, make_actor):
    with pytest.raises(MemoryNotFound):
        make_actor(local_storage, "acme/ghost", register_first=False)


def test_observe_logs_then_applies_and_repeats_are_idempotent(local_storage, make_actor):
    actor = make_actor(local_storage, Q)
    vectors = encode(["one", "two"])
    with pytest.raises(InvalidInput):
        actor.observe("bad", np.zeros((1, 7), np.float32), ["one"])
    with pytest.raises(InvalidInput):
        actor.observe("bad", vectors[:1], [])
    with pytest.raises(InvalidInput):
        actor.observe("bad", vectors[:1] * np.nan, ["one"])
    for kwargs in ({"learning_rate": -1.0}, {"learning_rate": 3.0}, {"domain": "d" * 65}, {"domain": " \u200b "}):
        with pytest.raises(InvalidInput):
            actor.observe("bad", vectors[:1], ["one"], **kwargs)
    for texts in (["   "], ["x" * 100_001]):
        with pytest.raises(InvalidInput):
            actor.observe("bad", vectors[:1], texts)
    assert wal_steps(local_storage) == []  # refused writes never reach the WAL

    first = actor.observe("r1", vectors[:1], ["one"], domain="demo", learning_rate=0.5)
    assert first["step"] == 1 and len(first["weight_hash"]) == 64
    (entry,) = local_storage.metadata.wal_read_after(Q, 0)
    assert entry["step"] == 1 and entry["texts"] == ["one"] and entry["domain"] == "demo"
    assert entry["options"] == {"request_id": "r1", "learning_rate": 0.5}
    assert np.frombuffer(entry["vectors"], "<f4").tolist() == vectors[0].tolist()

    assert actor.observe("r1", vectors[:1], ["one"], domain="demo", learning_rate=0.5) == {**first, "repeated": True}
    assert actor.stats()["total_observations"] == 1 and wal_steps(local_storage) == [1]
    batch = actor.observe("r2", vectors, ["one", "two"])
    assert batch["step"] == 3 and wal_steps(local_storage) == [1, 3]
    actor.flush_records()
    stats = local_storage.metadata.get_stats(Q)
    assert stats["total_observations"] == 3 and stats["step"] == 3 and stats["domains"] == ["demo"]
    assert [h["step"] for h in local_storage.metadata.history(Q)] == [1, 2, 3]


def test_a_request_id_names_one_write_live_and_after_a_restart(local_storage, make_actor):
    """A retry must repeat its write and gets the first answer; the id of another write is
    refused, nothing applied. Both hold after a restart, whether the write is replayed from the
    log or already inside the checkpoint the restart loads (then the history details it), and
    after a later checkpoint trimmed it from the log (a consolidate's barrier)."""
    actor = make_actor(local_storage, Q)
    vectors = encode(["one", "two", "three"])
    first = actor.observe("r1", vectors[:2], ["one", "two"], domain="d", learning_rate=0.5)
    actor.observe("r2", vectors[2:], ["three"])  # r1 is not the newest write: its own hash comes back
    answer = ("surprise", "surprises", "weight_delta", "patterns_activated", "step", "weight_hash")
    for restart in (None, "replayed", "checkpointed", "trimmed"):
        if restart == "replayed":
            actor = make_actor(local_storage, Q)  # a new process: checkpoint + log replay
        elif restart == "checkpointed":  # a clean stop checkpoints the write (tail >= 1)
            actor = make_actor(local_storage, Q, wal_tail_writes=1)
            actor.prepare_hibernate()
            actor = make_actor(local_storage, Q)
            assert autos(local_storage)[-1]["step"] == 3  # the write is in the loaded checkpoint
        elif restart == "trimmed":
            actor.consolidate()  # a barrier checkpoint: the log before it is archived
            actor = make_actor(local_storage, Q)
            assert not wal_steps(local_storage)  # only the history still names r1
        for args, kwargs in (((vectors[:2], ["one", "three"]), {"domain": "d", "learning_rate": 0.5}),
                             ((vectors[:2], ["one", "two"]), {"domain": None, "learning_rate": 0.5}),
                             ((vectors[:2], ["one", "two"]), {"domain": "d"}),
                             ((vectors[2:], ["three"]), {"domain": "d", "learning_rate": 0.5})):
            with pytest.raises(RequestIdReused, match="r1"):
                actor.observe("r1", *args, **kwargs)
        again = actor.observe("r1", vectors[:2], ["one", "two"], domain="d", learning_rate=0.5)
        assert {k: again[k] for k in answer} == {k: first[k] for k in answer}
        assert actor.stats()["total_observations"] == 3


def test_a_retry_is_recognised_after_a_restart_however_large_the_writes_since(local_storage, make_actor):
    """The history keeps the newest 1,000 observations, so a few large batches push a write out
    of it; Redis keeps a record per write instead (the newest NMEM_REMEMBERED_REQUESTS): after
    the log is trimmed and the actor restarts, a retry still gets its first answer and is not
    learned again, and the records are capped by count of writes."""
    actor = make_actor(local_storage, Q, remembered_requests=6)
    first = actor.observe("first", encode(["one", "two"]), ["one", "two"], domain="d")
    batch = [f"later fact {i}" for i in range(300)]
    for n in range(4):  # 1,200 observations since: "first" has left the history
        actor.observe(f"batch-{n}", encode(batch), batch)
    actor.consolidate()  # a barrier checkpoint: the log before it is archived
    actor.flush_records()
    assert "first" not in {h.get("request_id") for h in local_storage.metadata.history(Q, 1000)}
    assert not wal_steps(local_storage)
    actor = make_actor(local_storage, Q, remembered_requests=6)
    again = actor.observe("first", encode(["one", "two"]), ["one", "two"], domain="d")
    assert {k: again[k] for k in first} == first and again["repeated"]
    with pytest.raises(RequestIdReused, match="first"):
        actor.observe("first", encode(["one", "three"]), ["one", "three"], domain="d")
    assert actor.stats()["total_observations"] == 1202
    for n in range(4):  # past the cap of 6 writes: the oldest record goes
        actor.observe(f"more-{n}", encode([f"more {n}"]), [f"more {n}"])
    actor.flush_records()
    kept = [w["request_id"] for w in local_storage.metadata.recent_writes(Q)]
    assert kept == ["batch-2", "batch-3", "more-0", "more-1", "more-2", "more-3"]


def test_auto_checkpoints_by_count_and_time_then_trim(storage, make_actor):
    actor = make_actor(storage, Q, checkpoint_every_writes=3, checkpoint_every_seconds=1.0, wal_tail_writes=1)
    texts = [f"fact {i}" for i in range(7)]
    vectors = encode(texts)
    actor.observe("w0", vectors[:1], texts[:1])
    # One write, then quiet: the time trigger checkpoints it.
    assert wait_until(lambda: autos(storage)[-1]["step"] == 1, timeout=60)
    for i in range(1, 7):
        actor.observe(f"w{i}", vectors[i : i + 1], texts[i : i + 1])
    # The newest and its fallback are kept; older ones are deleted (index entry and object)
    # right after the WAL is trimmed.
    assert wait_until(lambda: [c["step"] for c in autos(storage)][-1:] == [7] and len(autos(storage)) == 2,
                      timeout=60)
    kept = autos(storage)
    # The WAL is kept back to the fallback checkpoint, nothing older.
    assert all(kept[0]["step"] < s <= 7 for s in wal_steps(storage))
    # (the trimmed entries live on as archived log segments: actors/history.py)
    assert len([k for k in storage.checkpoints.list(f"{Q}/") if "/_log/" not in k]) == 2


def test_user_checkpoint_restore_is_a_barrier(local_storage, make_actor):
    actor = make_actor(local_storage, Q)
    texts = [f"note {i}" for i in range(6)]
    vectors = encode(texts)
    for i in range(3):
        actor.observe(f"a{i}", vectors[i : i + 1], texts[i : i + 1])
    saved = actor.checkpoint("v1", "three notes")
    assert saved["step"] == 3 and saved["description"] == "three notes"
    with pytest.raises(CheckpointConflict):
        actor.checkpoint("v1")
    for i in range(3, 6):
        actor.observe(f"a{i}", vectors[i : i + 1], texts[i : i + 1])
    with pytest.raises(CheckpointNotFound):
        actor.restore("v9")

    restored = actor.restore("v1")
    assert restored == {"restored": True, "weight_hash": saved["weight_hash"], "learning_since_checkpoint": 3}
    assert wal_steps(local_storage) == []  # pre-restore writes can never be replayed
    assert [c["step"] for c in autos(local_storage)] == [3]
    actor.flush_records()  # stats are written in the background, in order
    assert local_storage.metadata.get_stats(Q)["step"] == 3

    # A new actor on the same memory (as after a crash) sees the restored state.
    actor.observe("b0", vectors[5:6], texts[5:6])
    expected = actor.stats()["weight_hash"]
    twin = MemoryActor(Q, actor._spec)
    assert twin.start()["weight_hash"] == expected
    twin._stop.set()
    twin._storage.close()


def test_a_short_tail_stays_in_the_wal_a_long_one_is_checkpointed(local_storage, make_actor):
    import time

    actor = make_actor(local_storage, Q, checkpoint_every_seconds=0.05, wal_tail_writes=3)
    texts = [f"tail {i}" for i in range(3)]
    vectors = encode(texts)
    for i in range(2):
        actor.observe(f"t{i}", vectors[i : i + 1], texts[i : i + 1])
    time.sleep(0.1)
    assert not actor._checkpoint_due()  # seconds are up, but two writes replay faster than a checkpoint
    actor.observe("t2", vectors[2:3], texts[2:3])
    assert actor._checkpoint_due()
    assert wait_until(lambda: autos(local_storage)[-1]["step"] == 3, timeout=60)

    other = make_actor(local_storage, "acme/tail", wal_tail_writes=3)
    other.observe("u0", vectors[:1], texts[:1])
    assert other.prepare_hibernate() == {"step": 1}
    assert [c["step"] for c in autos(local_storage, "acme/tail")] == [0]  # hibernation kept the tail
    assert wal_steps(local_storage, "acme/tail") == [1]
    twin = MemoryActor("acme/tail", other._spec)
    assert twin.start()["replayed"] == 1 and twin.stats()["weight_hash"] == other.stats()["weight_hash"]
    twin._stop.set()
    twin._storage.close()


def test_a_tail_of_few_writes_but_many_observations_is_checkpointed(local_storage, make_actor):
    """A batch is one write but many observations to replay on wake: the tail a hibernation
    keeps is bounded in observations too, and so is the log between auto-checkpoints."""
    texts = [f"batch item {i}" for i in range(30)]
    vectors = encode(texts)
    actor = make_actor(local_storage, Q, wal_tail_writes=32, wal_tail_observations=8)
    actor.observe("b0", vectors[:5], texts[:5])
    assert not actor._tail_too_long()
    actor.observe("b1", vectors[5:10], texts[5:10])  # 2 writes, but 10 observations
    assert actor._tail_too_long() and not actor._checkpoint_due()  # its seconds are not up
    assert actor.prepare_hibernate() == {"step": 10}
    assert autos(local_storage)[-1]["step"] == 10  # checkpointed, not left to a 10-item replay

    other = make_actor(local_storage, "acme/many", checkpoint_every_observations=20)
    other.observe("m0", vectors[:19], texts[:19])
    assert not other._checkpoint_due()
    other.observe("m1", vectors[19:21], texts[19:21])  # 2 writes, 21 observations: due
    assert wait_until(lambda: autos(local_storage, "acme/many")[-1]["step"] == 21, timeout=60)


def test_hibernating_actor_refuses_writes_but_answers_reads(local_storage, make_actor):
    actor = make_actor(local_storage, Q, wal_tail_writes=0)  # 0: hibernation always checkpoints
    vectors = encode(["late note"])
    actor.observe("h0", vectors, ["late note"])
    assert actor.prepare_hibernate() == {"step": 1}
    assert autos(local_storage)[-1]["step"] == 1
    with pytest.raises(Unavailable, match="hibernating"):
        actor.observe("h1", vectors, ["late note"])
    assert actor.surprise(vectors[0], "late note")["score"] < 1.0
    assert actor.snapshot()["step"] == 1  # fork source: the hibernation checkpoint, reused


def test_spare_warms_up_then_serves_one_memory_for_life(local_storage, make_actor):
    """A spare is made before its memory is known; start(qname) binds it, once and for all."""
    source = make_actor(local_storage, Q)
    vectors = encode(["kept before the spare"])
    source.observe("s0", vectors, ["kept before the spare"])
    assert source.prepare_hibernate() == {"step": 1}

    spare = MemoryActor(None, source._spec)
    try:
        assert spare.identity() == {"qname": None, "started": False, "warm": False, "code": CODE_ID}
        warmed = spare.warm()
        assert {"imports", "open_storage", "total"} <= set(warmed["timings"])
        assert spare.identity() == {"qname": None, "started": False, "warm": True, "code": CODE_ID}
        with pytest.raises(InvalidInput, match="needs the name"):
            spare.start()
        with pytest.raises(Unavailable):
            spare.stats()

        started = spare.start(Q)
        assert started["was_warm"] and started["step"] == 1 and started["replayed"] == 1  # the WAL tail
        assert started["weight_hash"] == source.stats()["weight_hash"]
        assert "imports" not in started["timings"]  # paid by warm(), not by the start
        assert {"checkpoint_fetch", "checkpoint_decode", "wal_replay", "total"} <= set(started["timings"])
        assert spare.identity() == {"qname": Q, "started": True, "warm": True, "code": CODE_ID}
        assert spare.start(Q)["step"] == 1  # idempotent
        with pytest.raises(Unavailable, match="serves another memory; retry") as refused:
            spare.start("acme/other")
        assert Q not in str(refused.value) and shown(Q) not in str(refused.value)  # maybe another tenant's
        assert spare.observe("s1", encode(["learned by the spare"]), ["learned by the spare"])["step"] == 2
    finally:
        spare._stop.set()
        spare._wake.set()
        if spare._storage is not None:
            spare._storage.close()


def test_released_actor_serves_the_next_memory_like_a_fresh_one(local_storage, make_actor):
    """bind A, learn, release, bind B: B's answers and weight_hash equal a fresh actor's for B,
    A comes back whole elsewhere, and a stale call for A is refused, never served by B."""
    a_texts = [f"alpha secret {i}" for i in range(5)]
    b_texts = ["bravo one", "bravo two"]
    a_vec, b_vec = encode(a_texts), encode(b_texts)
    actor = make_actor(local_storage, "acme/a", wal_tail_writes=3)
    for i, text in enumerate(a_texts):
        actor.call("acme/a", "observe", f"a{i}", a_vec[i : i + 1], [text])
    a_hash = actor.stats()["weight_hash"]
    assert actor.release()["step"] == 5
    assert actor.identity() == {"qname": None, "started": False, "warm": True, "code": CODE_ID}
    with pytest.raises(Unavailable, match="not served"):
        actor.call("acme/a", "stats")

    register(local_storage, "acme/b")
    fresh = make_actor(local_storage, "acme/b-twin")  # same config, never served anything else
    assert actor.start("acme/b")["weight_hash"] == fresh.stats()["weight_hash"]
    assert actor._checkpointer.is_alive()  # B is checkpointed again (A's stop flag did not carry over)
    for i, text in enumerate(b_texts):
        ours = actor.call("acme/b", "observe", f"b{i}", b_vec[i : i + 1], [text])
        theirs = fresh.observe(f"b{i}", b_vec[i : i + 1], [text])
        assert ours == theirs
    probe = encode(["alpha secret 3"])[0]
    assert actor.call("acme/b", "infer", probe, 3) == fresh.infer(probe, 3)  # nothing of A answers
    assert actor.route(("acme/b", "infer", (probe,), {"top_k": 3})) == fresh.infer(probe, 3)  # as Ray sends it
    assert actor.call("acme/b", "stats") == fresh.stats()
    assert actor.call("acme/b", "explain", 10) == fresh.explain(10)
    with pytest.raises(Unavailable, match="not served"):
        actor.call("acme/a", "infer", probe, 3)
    with pytest.raises(Unavailable, match="not served"):
        actor.route(("acme/a", "stats", (), {}))
    with pytest.raises(InvalidInput, match="not a memory operation"):
        actor.call("acme/b", "release")
    with pytest.raises(InvalidInput, match="not a memory operation"):
        actor.route(("acme/b", "release", (), {}))

    again = make_actor(local_storage, "acme/a")  # A was hibernated with its WAL tail: nothing lost
    assert again.stats()["weight_hash"] == a_hash and again.stats()["total_observations"] == 5


def test_an_idle_release_leaves_a_memory_live_while_a_write_waits_for_its_predecessor(local_storage, make_actor):
    """The idle reaper's release (if_idle) does nothing while a call runs: a write waiting for
    the one it names (after_request_id) is not cut off by hibernation (it was refused, retried
    on a woken memory, cut off again, for minutes); it gets its 409 when its wait ends, and
    once nothing runs the memory is released."""
    from errors import OutOfOrder

    actor = make_actor(local_storage, Q, ordered_write_wait_seconds=1.0)
    vector = encode(["waits"])
    outcome: list = []

    def waiting_write() -> None:
        try:
            outcome.append(actor.call(Q, "observe", "w2", vector, ["waits"], None, None, "never-sent"))
        except OutOfOrder as exc:
            outcome.append(exc)

    writer = threading.Thread(target=waiting_write)
    writer.start()
    assert wait_until(lambda: actor._in_flight == 1, timeout=10)
    assert actor.release(if_idle=True) == {"busy": True}
    assert actor.ping() and actor.call(Q, "stats")["total_observations"] == 0  # still live, still served
    writer.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], OutOfOrder)
    assert actor.release(if_idle=True)["step"] == 0
    assert actor.identity()["qname"] is None


def test_a_released_process_hands_its_freed_heap_back_only_once_it_stays_unbound(local_storage, make_actor,
                                                                                   monkeypatch):
    """In a burst the next memory is bound within milliseconds and reuses the freed pages as
    they are (trimming at release made each start fault ~2,000 of them in again); a process
    that stays a spare gives them back after TRIM_AFTER seconds, once per release."""
    import time

    from actors import binding

    trims: list[float] = []
    monkeypatch.setattr(binding, "TRIM_AFTER", 0.3)
    monkeypatch.setattr(binding, "return_freed_memory", lambda: trims.append(time.monotonic()))
    for name in ("acme/b", "acme/c"):
        register(local_storage, name)
    actor = make_actor(local_storage, "acme/a")
    actor.release()
    actor.start("acme/b")  # bound again at once: nothing is trimmed under it
    time.sleep(0.6)
    assert trims == []
    actor.release()
    actor.start("acme/c")
    actor.release()  # two releases in a row: one trim, TRIM_AFTER after the last
    released = time.monotonic()
    wait_until(lambda: trims, timeout=5)
    time.sleep(0.6)
    assert len(trims) == 1 and trims[0] - released >= 0.25


def _fail_once(monkeypatch, *, after_applying: bool) -> None:
    """The next NeuralMemory.observe_vectors raises, having touched the weights or not."""
    from memory import NeuralMemory

    real = NeuralMemory.observe_vectors

    def failing(self, *args, **kwargs):
        monkeypatch.setattr(NeuralMemory, "observe_vectors", real)
        if after_applying:
            real(self, *args, **kwargs)
        raise ZeroDivisionError("the write could not be applied")

    monkeypatch.setattr(NeuralMemory, "observe_vectors", failing)


@pytest.mark.parametrize("after_applying", [False, True], ids=["before-weights", "half-applied"])
def test_a_write_that_fails_to_apply_is_never_acknowledged_nor_replayed(local_storage, make_actor,
                                                                        monkeypatch, after_applying):
    actor = make_actor(local_storage, Q)
    vectors = encode(["one", "two", "three"])
    actor.observe("r1", vectors[:1], ["one"])
    before = actor.stats()
    _fail_once(monkeypatch, after_applying=after_applying)
    with pytest.raises(ZeroDivisionError):
        actor.observe("r2", vectors[1:2], ["two"])
    after = actor.stats()
    assert (after["step"], after["weight_hash"]) == (before["step"], before["weight_hash"]) == (1, before["weight_hash"])
    assert wal_steps(local_storage) == [1]  # the failed write left the log
    third = actor.observe("r3", vectors[2:], ["three"])
    assert third["step"] == 2 and wal_steps(local_storage) == [1, 2]

    restarted = make_actor(local_storage, Q)  # a new process: checkpoint + log replay
    assert restarted.stats()["weight_hash"] == third["weight_hash"]
    reference = reference_hash(["one", "three"], vectors[[0, 2]])
    assert third["weight_hash"] == reference


@pytest.mark.parametrize("redis_blip", [False, True])
def test_a_write_refused_for_diverging_leaves_the_memory_as_it_was(local_storage, make_actor, monkeypatch,
                                                                   redis_blip):
    """A batch whose later chunk would overflow the step is refused (InvalidInput) after its
    first chunks were learned in process: the actor rebuilds the memory, so nothing of it stays,
    in the weights, the step or the log, and the memory takes the next write. If the log cannot
    be fixed at once (`redis_blip`), reads are refused until it is, never served from weights
    holding part of a write that was not acknowledged."""
    register(local_storage, Q, {"encoder": "hash", "momentum": 0.99, "memory_depth": 8, "memory_width": 16,
                                "max_grad_norm": 1e6})
    actor = make_actor(local_storage, Q)
    first = actor.observe("r1", encode(["first"]), ["first"])
    texts = [f"fact {i}" for i in range(100)]
    meta = actor._storage.metadata
    real_drop = meta.wal_drop
    if redis_blip:
        monkeypatch.setattr(meta, "wal_drop", lambda *a, **k: (_ for _ in ()).throw(MetadataError("down")))
    with pytest.raises(InvalidInput, match="diverge"):
        actor.observe("r2", encode(texts), texts, learning_rate=2.0)
    if redis_blip:
        with pytest.raises(Unavailable, match="undoing a write"):
            actor.stats()
        monkeypatch.setattr(meta, "wal_drop", real_drop)
    after = actor.stats()
    assert (after["step"], after["weight_hash"]) == (1, first["weight_hash"]) and wal_steps(local_storage) == [1]
    second = actor.observe("r3", encode(["second"]), ["second"])
    assert second["step"] == 2
    assert make_actor(local_storage, Q).stats()["weight_hash"] == second["weight_hash"]


def test_a_write_whose_log_append_answer_was_lost_is_dropped_before_the_next(local_storage, make_actor,
                                                                              monkeypatch):
    """The append reached Redis but its reply did not (server killed): unacknowledged, so the
    entry goes before the next write is logged, and a replay never applies it."""
    actor = make_actor(local_storage, Q)
    vectors = encode(["one", "two", "three"])
    actor.observe("r1", vectors[:1], ["one"])
    meta = actor._storage.metadata
    real_append, real_drop = meta.wal_append, meta.wal_drop

    def append_then_lose_reply(name, entry, owner=None):
        real_append(name, entry, owner)
        raise MetadataError("Redis/Valkey did not answer in time")

    def drop_while_down(*args, **kwargs):
        raise MetadataError("Redis/Valkey is unreachable")

    monkeypatch.setattr(meta, "wal_append", append_then_lose_reply)
    monkeypatch.setattr(meta, "wal_drop", drop_while_down)
    first = actor.stats()["weight_hash"]
    with pytest.raises(MetadataError):
        actor.observe("r2", vectors[1:2], ["two"])
    assert wal_steps(local_storage) == [1, 2]  # still there: the drop failed too
    assert actor.stats()["weight_hash"] == first  # logged first, so never applied: reads do not show it
    monkeypatch.setattr(meta, "wal_append", real_append)
    monkeypatch.setattr(meta, "wal_drop", real_drop)
    third = actor.observe("r3", vectors[2:], ["three"])
    assert third["step"] == 2 and [e["texts"] for e in local_storage.metadata.wal_read_after(Q, 0)] == [["one"], ["three"]]
    assert make_actor(local_storage, Q).stats()["weight_hash"] == third["weight_hash"]


def test_history_unwritten_by_a_killed_actor_is_rebuilt_from_the_wal(local_storage, make_actor):
    actor = make_actor(local_storage, Q)
    texts = ["first fact", "second fact", "third fact", "fourth fact"]
    actor.observe("w1", encode(texts[:1]), texts[:1])
    actor.flush_records()
    actor._write_record = lambda *_, **__: None  # dies before its background writes reach Redis
    for i, text in enumerate(texts[1:], start=2):
        last = actor.observe(f"w{i}", encode([text]), [text])
    actor.flush_records()
    assert [h["step"] for h in local_storage.metadata.history(Q)] == [1]
    actor._stop.set()

    again = make_actor(local_storage, Q)  # the replacement replays the WAL
    again.flush_records()
    history = local_storage.metadata.history(Q)
    assert [(h["step"], h["text"]) for h in history] == list(enumerate(texts, start=1))
    assert history[-1]["weight_hash"] == last["weight_hash"] == again.stats()["weight_hash"]
    assert local_storage.metadata.get_stats(Q)["step"] == 4


def test_forks_of_one_base_in_one_process_share_its_chunks_never_what_a_fork_learned(local_storage, make_actor):
    """Forks of one base bound one after the other in one process: the second reads the base's
    chunks from the process's memory and gets the base's weights, not the first fork's."""
    from actors import ActorSettings, ActorSpec
    from actors.durability import Checkpoints

    base = make_actor(local_storage, "acme/base")
    texts = ["base fact one", "base fact two", "fork one learns this"]
    vectors = encode(texts)
    base.observe("b0", vectors[:2], texts[:2])
    tag = base.checkpoint("v1")
    for fork in ("acme/f1", "acme/f2", "acme/f3"):
        register(local_storage, fork)
        Checkpoints(local_storage, fork).copy_auto(tag)

    spec = ActorSpec(storage=local_storage.settings, settings=ActorSettings(checkpoint_every_seconds=3600.0))
    actor = MemoryActor(None, spec)
    try:
        first = actor.start("acme/f1")
        assert first["weight_hash"] == tag["weight_hash"]
        learned = actor.call("acme/f1", "observe", "f0", vectors[2:], texts[2:])
        actor.release()
        shas = local_storage.content.manifest(tag["object_key"]).chunk_shas()
        assert all(actor._storage.content.cache.get(sha) is not None for sha in shas)
        second = actor.start("acme/f2")
        assert second["weight_hash"] == tag["weight_hash"] != learned["weight_hash"]
        assert texts[2] not in actor.call("acme/f2", "infer", vectors[2], 5)["response"]
        decoded = make_actor(local_storage, "acme/f3")  # a process that decoded the base itself
        ours = actor.call("acme/f2", "observe", "g0", vectors[2:], texts[2:])
        assert ours == decoded.observe("g0", vectors[2:], texts[2:])
        assert actor.call("acme/f2", "infer", vectors[2], 3) == decoded.infer(vectors[2], 3)
    finally:
        actor._stop.set()
        actor._storage.close()
    again = make_actor(local_storage, "acme/f1")  # f1's own learning is kept in its WAL
    assert again.stats()["weight_hash"] == learned["weight_hash"]


def test_a_fork_starts_from_its_copied_checkpoint_without_writing_one_of_its_own(local_storage, make_actor):
    """A fork's first state is a copy of the source's manifest at position 0 of its own log: the
    fork starts from it as it is (no checkpoint written on start), its history begins there,
    and what it learns next is kept by its WAL until the usual checkpoint rule."""
    from actors.durability import Checkpoints

    config = {**SMALL, "episode_chunk": 4}
    register(local_storage, "acme/base", config)
    base = make_actor(local_storage, "acme/base")
    texts = [f"base fact {i} about subject {i * 3}" for i in range(11)]  # two chunks and a tail
    base.observe("b0", encode(texts), texts)
    tag = base.checkpoint("v1")
    register(local_storage, "acme/f1", config)
    Checkpoints(local_storage, "acme/f1").copy_auto(tag)

    fork = make_actor(local_storage, "acme/f1")
    autos = Checkpoints(local_storage, "acme/f1").autos()
    assert [(a["seq"], a["step"]) for a in autos] == [(0, 11)]  # only the copy: nothing written on start
    assert fork.stats()["weight_hash"] == tag["weight_hash"]
    assert local_storage.metadata.history_base("acme/f1")["step"] == 11  # not genesis: the fork's start
    learned = fork.observe("f0", encode(["the fork's own fact"]), ["the fork's own fact"])
    fork._stop.set()
    assert len(Checkpoints(local_storage, "acme/f1").autos()) == 1
    again = make_actor(local_storage, "acme/f1")  # the copy plus the WAL tail
    from memory import MemoryConfig, NeuralMemory

    twin = NeuralMemory(MemoryConfig.from_dict(normalize_config(config)))  # never forked, never saved
    twin.observe_vectors(encode(texts), texts)
    twin.observe_vectors(encode(["the fork's own fact"]), ["the fork's own fact"])
    assert again.stats()["weight_hash"] == learned["weight_hash"] == twin.weight_hash


def test_a_write_record_refused_while_redis_restarts_lands_once_it_is_back(local_storage, make_actor, monkeypatch):
    """The stats/history record of an answered write is retried on the recorder thread until
    Redis takes it: the history has no gap, the count is right, and a retry of the write
    after the actor restarted is answered with its first answer (which only the history keeps)."""
    actor = make_actor(local_storage, Q)
    meta = actor._storage.metadata
    real_record_write, refusals = meta.record_write, {"left": 3}

    def restarting(*args, **kwargs):
        if refusals["left"]:
            refusals["left"] -= 1
            raise MetadataError("Redis/Valkey did not answer in time")
        return real_record_write(*args, **kwargs)

    monkeypatch.setattr(meta, "record_write", restarting)
    first = actor.observe("r1", encode(["one"]), ["one"])
    actor.observe("r2", encode(["two"]), ["two"])
    actor.flush_records()
    assert refusals["left"] == 0
    assert [h["text"] for h in meta.history(Q)] == ["one", "two"]
    assert meta.get_stats(Q)["total_observations"] == 2
    again = make_actor(local_storage, Q).observe("r1", encode(["one"]), ["one"])
    assert (again["step"], again["weight_hash"], again["surprise"]) == (1, first["weight_hash"], first["surprise"])


def test_a_wait_for_records_redis_does_not_take_is_refused_as_unavailable(local_storage, make_actor, monkeypatch):
    """A call that needs the records written (a retry answered from them, a forget's swap)
    gets 503-style Unavailable, not a bare timeout, while Redis stays away; nothing is lost."""
    actor = make_actor(local_storage, Q)
    meta = actor._storage.metadata
    real_record_write, back = meta.record_write, threading.Event()

    def away(*args, **kwargs):
        back.wait(30)
        return real_record_write(*args, **kwargs)

    monkeypatch.setattr(meta, "record_write", away)
    actor.observe("r1", encode(["one"]), ["one"])
    with pytest.raises(Unavailable, match="retry"):
        actor.flush_records(timeout=0.2)
    back.set()
    assert actor.flush_records()
    assert [h["text"] for h in meta.history(Q)] == ["one"]


def test_an_actor_whose_memory_was_taken_over_serves_it_no_more(local_storage, make_actor):
    """ray.kill frees the actor's name before its process is gone, so a call can still reach a
    killed actor after its successor rebuilt the memory from the log. That write must not land
    (nor be answered), and the old actor answers nothing from its stale state."""
    oldest = make_actor(local_storage, Q)
    vectors = encode(["one", "two", "three"])
    oldest.observe("r1", vectors[:1], ["one"])
    old = make_actor(local_storage, Q)  # takes the memory, then reads the log
    new = make_actor(local_storage, Q)
    with pytest.raises(Superseded):  # refused by the log itself
        oldest.observe("r2", vectors[1:2], ["two"])
    with pytest.raises(Superseded):  # a fork's source, checked before anything is saved
        old.snapshot()
    assert wal_steps(local_storage) == [1] and len(autos(local_storage)) == 1
    for actor in (oldest, old):
        for refused in (actor.stats, actor.start, lambda a=actor: a.observe("r3", vectors[2:], ["three"]),
                        lambda a=actor: a.forget_start("j1", {"selector": {"texts": ["one"]}})):
            with pytest.raises(Superseded):
                refused()
        assert not actor.ping()
        assert wait_until(lambda a=actor: not a._checkpointer.is_alive(), timeout=10)
    second = new.observe("r2", vectors[1:2], ["two"])
    assert second["step"] == 2 and wal_steps(local_storage) == [1, 2]
    assert second["weight_hash"] == reference_hash(["one", "two"], vectors[:2])


def test_the_stored_stats_follow_a_consolidation(local_storage, make_actor):
    """Listings read the stats from Redis: after a consolidate they name its weights, not the
    last write's."""
    actor = make_actor(local_storage, Q)
    texts = [f"fact number {i} about topic {i % 3}" for i in range(24)]
    actor.observe("w", encode(texts), texts)
    actor.flush_records()
    before = local_storage.metadata.get_stats(Q)["weight_hash"]
    actor.consolidate()
    after = actor.stats()["weight_hash"]
    assert after != before  # the consolidation changed the weights
    actor.flush_records()
    assert local_storage.metadata.get_stats(Q)["weight_hash"] == after


def test_a_read_beside_a_batch_sees_the_memory_before_or_after_it(local_storage, make_actor):
    """Reads run beside writes, but a batch is learned chunk by chunk and the step and weight hash
    follow its weights: a read must wait for the write, not see the memory halfway through it.
    Every read answers as the memory was after some answered write (checked against a twin fed
    the same batches in this process)."""
    import threading

    from memory import MemoryConfig, NeuralMemory

    config = register(local_storage, Q, {"encoder": "hash"})  # the default network: a batch takes a while
    actor = make_actor(local_storage, Q, register_first=False)
    texts = [f"reading beside batch {i}: item {i % 13} of shelf {i % 29}" for i in range(4 * 256)]
    batches = [texts[at : at + 256] for at in range(0, len(texts), 256)]
    cue = encode(["what is on the shelf?"])[0]
    twin = NeuralMemory(MemoryConfig.from_dict(config))
    answered = {(twin.step, twin.weight_hash): twin.infer_vector(cue)}
    for batch in batches:
        twin.observe_vectors(encode(batch), batch)
        answered[(twin.step, twin.weight_hash)] = twin.infer_vector(cue)

    seen, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            stats = actor.stats()
            seen.append(((stats["step"], stats["weight_hash"]), None))
            seen.append((None, actor.infer(cue)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i, batch in enumerate(batches):
            actor.observe(f"b{i}", encode(batch), batch)
    finally:
        stop.set()
        reader.join(30)
    assert actor.stats()["weight_hash"] == twin.weight_hash
    torn = [state for state, _ in seen if state is not None and state not in answered]
    assert not torn, f"{len(torn)} of {len(seen) // 2} stats reads saw a state no write answered: {torn[:3]}"
    answers = [answer for _, answer in seen if answer is not None]
    assert len(answers) >= 4
    assert all(answer in answered.values() for answer in answers)


def test_a_process_whose_forget_clean_up_still_runs_is_not_handed_to_another_memory(local_storage, make_actor):
    """A forget's clean-up waiting for the collector lock outlives the job's stop, and it writes
    to whatever memory the process serves when it ends: release refuses (the supervisor then
    kills the process) rather than bind the next memory under it, another tenant's perhaps."""
    actor = make_actor(local_storage, Q)
    holding = threading.Event()
    cleanup = threading.Thread(target=holding.wait, args=(30,), daemon=True)  # as one waiting for the lock
    actor._cleanups.append(cleanup)
    cleanup.start()
    with pytest.raises(Unavailable, match="still finishing"):
        actor.release(save=False)
    assert actor.identity()["qname"] == Q  # not unbound: nothing else can be bound to it
    holding.set()
    cleanup.join(10)
