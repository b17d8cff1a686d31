"""Forgetting in a MemoryActor, in process: exact by replay (equal to a twin that never saw the
forgotten text), with consolidate, tags and restores in the stream; erasure from every object
and Redis key of the memory; approximate when the history is gone; dry runs."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.cluster.helpers import wait_until
from tests.actors.forget_helpers import (assert_twins, feed, feed_checkpointed, find_text, forget,
                                         never_seen_surprises, run_stream)

X = "Alice's phone number is 555-0199 and she lives at 12 Elm Street"
A = [f"fact {i}: the {['cat', 'dog', 'owl'][i % 3]} sat on mat {i * 7}" for i in range(14)]
B = [f"note {i}: meeting room {i} is booked on day {i % 5}" for i in range(12)]


def q(name: str) -> str:
    return f"acme/{name}-{uuid.uuid4().hex[:6]}"


def test_forget_one_text_equals_a_twin_that_never_saw_it(storage, make_actor) -> None:
    spec = {"checkpoint_every_writes": 5}
    m, t = make_actor(storage, q("m"), **spec), make_actor(storage, q("t"), **spec)
    # X once alone and once inside a batch: both go, the batch is replayed without it.
    feed(m, A[:6] + [X] + A[6:10])
    feed(m, [A[10:13] + [X] + B[:2]])
    feed(m, B[2:])
    feed(t, A[:10])
    feed(t, [A[10:13] + B[:2]])
    feed(t, B[2:])
    assert find_text(storage, m._qname, X)  # the scan finds it where it is (WAL, archive, ...)
    job = forget(m, {"text": X})
    assert job["status"] == "done" and job["exact"] is True and job["forgotten"] == 2
    assert_twins(m, t, [X, A[3], B[4], "where does Alice live?"])
    assert job["report"]["archive"]["segments_written"] >= 1  # the archived log was rewritten
    assert find_text(storage, m._qname, X) == []
    assert m.surprise(*m_vec(X))["score"] >= min(never_seen_surprises(m)) - 0.05


def m_vec(text: str):
    from tests.cluster.helpers import encode

    return encode([text])[0], text


@pytest.mark.parametrize("stream", ["consolidate", "restore_of_a_tag_holding_x", "tag_before_x"])
def test_forget_with_consolidate_tags_and_restores_in_the_stream(local_storage, make_actor, stream) -> None:
    spec = {"checkpoint_every_writes": 4}
    m, t = make_actor(local_storage, q("m"), **spec), make_actor(local_storage, q("t"), **spec)
    steps = {
        "consolidate": [A[:5], X, A[5:9], "consolidate", B[:6]],
        "restore_of_a_tag_holding_x": [A[:5], X, A[5:7], "tag:t1", B[:5], "restore:t1", B[5:9]],
        "tag_before_x": [A[:5], "tag:t0", X, A[5:8], "consolidate", "restore:t0", B[:4], X, B[4:6]],
    }[stream]
    run_stream(m, steps)
    run_stream(t, [s for s in steps if s != X])
    job = forget(m, {"text": X})
    assert job["status"] == "done" and job["exact"] is True, job
    assert_twins(m, t, [X, A[2], B[3]])
    for tag in {s.split(":")[1] for s in steps if isinstance(s, str) and s.startswith("tag:")}:
        meta = local_storage.metadata
        assert meta.get_checkpoint(m._qname, tag)["weight_hash"] == meta.get_checkpoint(t._qname, tag)["weight_hash"]
    assert find_text(local_storage, m._qname, X) == []


def test_dry_run_lists_and_changes_nothing(local_storage, make_actor) -> None:
    m = make_actor(local_storage, q("m"))
    feed(m, A[:3] + [X])
    feed(m, [[B[0], X]], domain="contacts")
    before = m.stats()["weight_hash"]
    job = forget(m, {"text": X}, dry_run=True)
    assert job["status"] == "done" and job["forgotten"] == 2 and job["report"]["would_forget"] == 2
    assert [(o["step"], o["text"]) for o in job["report"]["observations"]] == [(4, X), (6, X)]
    assert m.stats()["weight_hash"] == before
    by_domain = forget(m, {"domain": "contacts"}, dry_run=True)
    assert [o["text"] for o in by_domain["report"]["observations"]] == [B[0], X]
    by_steps = forget(m, {"steps": {"from": 2, "to": 3}}, dry_run=True)
    assert [o["text"] for o in by_steps["report"]["observations"]] == A[1:3]
    approx = forget(m, {"text": X}, mode="approximate", dry_run=True, timeout=30)
    assert approx["status"] == "done" and approx["exact"] is False and approx["report"]["records"] == [X], approx
    assert m.stats()["weight_hash"] == before
    assert forget(m, {"text": X}, dry_run=True)["forgotten"] == 2  # the memory takes the next job


def test_without_history_exact_refuses_and_approximate_erases(local_storage, make_actor) -> None:
    m = make_actor(local_storage, q("m"), checkpoint_every_writes=3, history_retention="none")
    feed_checkpointed(m, A[:4] + [X] + A[4:14], every=3)  # X (step 5) leaves the kept history
    assert wait_until(lambda: local_storage.metadata.history_base(m._qname)["step"] >= 5)
    job = forget(m, {"text": X})
    assert job["status"] == "failed" and job["error"]["code"] == "history_unavailable"
    assert "approximate" in job["error"]["message"]
    approx = forget(m, {"text": X}, mode="approximate")
    assert approx["status"] == "done" and approx["exact"] is False and approx["forgotten"] == 1
    report = approx["report"]
    assert report["surprise_before"]["max"] < 0.3 <= report["surprise_after"]["min"]
    assert find_text(local_storage, m._qname, X) == []
    assert m.surprise(*m_vec(X))["score"] >= min(never_seen_surprises(m)) - 0.05


def test_writes_during_the_job_are_kept_and_replayed_at_the_swap(local_storage, make_actor) -> None:
    from tests.actors.conftest import register
    from tests.cluster.helpers import SMALL

    slow = {**SMALL, "chunk_size": 1}  # item by item: the replay takes long enough to write beside it
    m, t = q("m"), q("t")
    for name in (m, t):
        register(local_storage, name, slow)
    m, t = make_actor(local_storage, m), make_actor(local_storage, t)
    items = [f"reading {i}: valve {i % 11} pressure {i * 17 % 97}" for i in range(1200)]
    stream = [tuple(items[:200]), X, *[tuple(items[i:i + 200]) for i in range(200, 1200, 200)]]
    run_stream(m, stream)
    run_stream(t, [s for s in stream if s != X])
    job_id = uuid.uuid4().hex
    m.forget_start(job_id, {"selector": {"text": X}, "who": {}})
    during = [B[0], "consolidate", X, B[1]]  # X again while the job runs: forgotten at the swap
    run_stream(m, during)
    run_stream(t, [s for s in during if s != X])
    assert wait_until(lambda: m.forget_status(job_id)["status"] == "done", timeout=120)
    job = m.forget_status(job_id)
    assert job["report"]["tail_entries"] >= 2 and job["forgotten"] == 2  # the swap replayed them
    assert_twins(m, t, [X, B[0], items[5]])


def test_a_second_forget_of_an_older_text_still_equals_the_twin(local_storage, make_actor) -> None:
    """The first job archives the whole log (the part before its text included), so a later
    job can replay from further back."""
    older = "Frank's locker code is 8812"
    spec = {"checkpoint_every_writes": 3}
    m, t = make_actor(local_storage, q("m"), **spec), make_actor(local_storage, q("t"), **spec)
    run_stream(m, [A[:3], older, A[3:8], X, B[:5]])
    run_stream(t, [A[:3], A[3:8], B[:5]])
    assert forget(m, {"text": X})["exact"] is True
    second = forget(m, {"text": older})
    assert second["status"] == "done" and second["exact"] is True, second["error"]
    assert_twins(m, t, [older, X, A[4]])
    assert find_text(local_storage, m._qname, older) == [] and find_text(local_storage, m._qname, X) == []
    restarted = make_actor(local_storage, m._qname, **spec)  # recovery: new checkpoint + rewritten log
    assert_twins(restarted, t, [older, A[4]])


def test_a_job_reads_done_only_once_the_objects_holding_the_text_are_deleted(local_storage, make_actor,
                                                                             monkeypatch) -> None:
    """The job commits, then deletes the old objects; until they are gone it reads "running", so
    a caller that waits for "done" never finds the text in the store afterwards."""
    import threading

    from storage.gc import GarbageCollector

    m = make_actor(local_storage, q("m"), checkpoint_every_writes=5)
    feed(m, A[:6] + [X] + A[6:10])
    entered, release = threading.Event(), threading.Event()
    sweep = GarbageCollector.sweep

    def held_sweep(self, *args, **kwargs):
        entered.set()
        release.wait(30)
        return sweep(self, *args, **kwargs)

    monkeypatch.setattr(GarbageCollector, "sweep", held_sweep)
    job_id = uuid.uuid4().hex
    m.forget_start(job_id, {"selector": {"text": X}, "mode": "exact", "dry_run": False, "who": {"key": "test"}})
    assert entered.wait(60)  # committed; the chunks that held X are not deleted yet
    held = m.forget_status(job_id)
    assert held["status"] == "running" and held["progress"] < 1
    release.set()
    assert wait_until(lambda: m.forget_status(job_id)["status"] == "done", timeout=60)
    assert find_text(local_storage, m._qname, X) == []


def test_a_job_waits_for_a_collection_holding_the_lock_and_then_deletes_the_chunks(local_storage, make_actor,
                                                                                   monkeypatch) -> None:
    """Another collection held the lock past the sweep's wait: the job read "done" with the
    chunk that held the text still on disk (reported "shared"). It reads "running" until the
    lock is free, then deletes them."""
    import storage.gc as gc

    monkeypatch.setattr(gc.GarbageCollector.sweep, "__defaults__", ((), 0.5))  # the sweep's wait: 0.5 s
    m = make_actor(local_storage, q("m"), checkpoint_every_writes=5)
    feed(m, A[:6] + [X] + A[6:10])
    meta = local_storage.metadata
    assert meta.gc_lock("a-long-collection", 600)
    job_id = uuid.uuid4().hex
    m.forget_start(job_id, {"selector": {"text": X}, "mode": "exact", "dry_run": False, "who": {"key": "test"}})
    assert wait_until(lambda: m.forget_status(job_id).get("report") is not None, timeout=60)  # committed
    time.sleep(2)  # several sweeps found the lock held
    assert m.forget_status(job_id)["status"] == "running"
    assert find_text(local_storage, m._qname, X)  # the old chunk: no manifest names it, it is not gone yet
    meta.gc_unlock("a-long-collection")
    assert wait_until(lambda: m.forget_status(job_id)["status"] == "done", timeout=60)
    report = m.forget_status(job_id)["report"]
    assert report["chunks_deleted"] >= 1 and find_text(local_storage, m._qname, X) == [], report


def test_a_retry_after_a_forget_is_answered_not_applied_again(local_storage, make_actor) -> None:
    """Writes the replay did not answer (one before its start, the forgotten one) stay known:
    a retry gets its first answer, or for the forgotten write is not learned again."""
    from errors import RequestIdReused
    from tests.cluster.helpers import encode

    m = make_actor(local_storage, q("m"))
    vectors = encode([A[0], X, A[1]])
    first = m.observe("r1", vectors[:1], [A[0]])
    m.consolidate()  # a barrier checkpoint: the replay starts after r1
    m.observe("r2", vectors[1:2], [X])
    m.observe("r3", vectors[2:], [A[1]])
    assert forget(m, {"text": X})["forgotten"] == 1
    after = m.stats()
    answer = ("surprise", "weight_delta", "patterns_activated", "step", "weight_hash")
    replayed = m.observe("r3", vectors[2:], [A[1]])  # the replay's answer: renumbered, its new hash
    assert (replayed["step"], replayed["answered"], replayed["weight_hash"]) == (2, [3], after["weight_hash"])
    for actor in (m, make_actor(local_storage, m._qname)):  # live, then from the write records
        again = actor.observe("r1", vectors[:1], [A[0]])
        assert {k: again[k] for k in answer} == {k: first[k] for k in answer}
        assert actor.observe("r3", vectors[2:], [A[1]]) == replayed
        actor.observe("r2", vectors[1:2], [X])  # acknowledged long ago, then forgotten: not learned again
        with pytest.raises(RequestIdReused):
            actor.observe("r1", vectors[2:], [A[1]])
        now = actor.stats()
        assert (now["total_observations"], now["weight_hash"]) == (after["total_observations"], after["weight_hash"])
    assert find_text(local_storage, m._qname, X) == []


def test_steps_select_what_observe_answered_after_an_earlier_forget_renumbered_them(local_storage,
                                                                                   make_actor) -> None:
    """Forgetting X makes the memory a twin that never saw it, so the steps after X shift down
    by one in its state. A later forget by `steps` names the steps observe answered (kept in
    the rewritten log, across a restart of the actor): it takes those observations, not the
    ones the renumbering moved onto those numbers; and a steps range cuts into a batch."""
    spec = {"checkpoint_every_writes": 3}
    m, t = make_actor(local_storage, q("m"), **spec), make_actor(local_storage, q("t"), **spec)
    answered = {}
    for item in [*A[:3], X, (A[3], A[4], A[5]), A[6], A[7], A[8]]:
        run_stream(m, [item])
        answered[item] = m.stats()["step"]
    assert answered[(A[3], A[4], A[5])] == 7 and answered[A[8]] == 10  # A[4] was answered step 6
    run_stream(t, [*A[:3], (A[3],), A[7], A[8]])
    assert forget(m, {"text": X})["forgotten"] == 1
    m = make_actor(local_storage, m._qname, **spec)  # recovered from the rewritten log

    dry = forget(m, {"steps": {"from": 6, "to": 8}}, dry_run=True)
    assert [(o["step"], o["text"]) for o in dry["report"]["observations"]] == [(6, A[4]), (7, A[5]), (8, A[6])]
    job = forget(m, {"steps": {"from": 6, "to": 8}})
    assert job["status"] == "done" and job["forgotten"] == 3, job
    assert_twins(m, t, [A[4], A[6], A[7], X])
    history = {h["text"]: h for h in local_storage.metadata.history(m._qname)}
    assert (history[A[7]]["step"], history[A[7]]["answered_step"]) == (5, 9)  # shown beside the step now
    assert "answered_step" not in history[A[0]]  # never renumbered
    # The answered steps outlive a second rewrite: steps 9-10 are A[7], A[8] still.
    assert [o["text"] for o in forget(m, {"steps": {"from": 9, "to": 10}}, dry_run=True)["report"]["observations"]] \
        == [A[7], A[8]]
    with pytest.raises(Exception, match="renumbered"):  # the records hold the renumbered steps
        forget(m, {"steps": {"from": 9, "to": 9}}, mode="approximate")


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_a_forgotten_write_is_never_learned_again_nor_tells_what_it_held(local_storage, make_actor, mode) -> None:
    """After a forget, a retry under a forgotten write's request id is answered as applied, not
    learned again, also after the actor restarts (the ids are kept in Redis); it gets the same
    answer whatever it holds, so the id cannot confirm a guess of the forgotten text (a 409 for
    a wrong guess would); and an exact retry of a batch one item was forgotten from is answered,
    not refused as another write. The fingerprints (hashes of what the writes held) are gone."""
    from actors.wal import write_fingerprint
    from tests.cluster.helpers import encode

    pin = "Bob's PIN is 4321"
    batch = [A[0], pin, A[1]]
    m = make_actor(local_storage, q("m"))
    m.observe("w-x", encode([X]), [X])
    m.observe("w-batch", encode(batch), batch)
    m.observe("w-after", encode([B[0]]), [B[0]])
    alike = X.replace(" and", ", and") + "."  # close to X: its answer names X's pattern
    assert X in m.observe("w-alike", encode([alike]), [alike])["patterns_activated"]
    prints = [write_fingerprint([X], None, None), write_fingerprint(batch, None, None)]
    prints += [bytes.fromhex(p) for p in prints]  # the write records keep them packed
    m.flush_records()
    assert all(find_text(local_storage, m._qname, p) for p in prints)  # in the history, as every write's
    selector = {"texts": [X, pin]}
    job = forget(m, selector, mode=mode)
    assert job["status"] == "done" and job["forgotten"] == 2, job
    assert all(find_text(local_storage, m._qname, p) == [] for p in [*prints, X, pin])
    assert X not in str(m.observe("w-alike", encode([alike]), [alike]))  # its answer, repeated

    for actor in (m, make_actor(local_storage, m._qname)):  # live, then restarted
        before = actor.stats()
        right = actor.observe("w-x", encode([X]), [X])
        wrong = actor.observe("w-x", encode(["Alice lives at 99 Oak Road"]), ["Alice lives at 99 Oak Road"])
        assert right == wrong
        actor.observe("w-batch", encode(batch), batch)  # not a 409: the same write
        after = actor.stats()
        assert (after["total_observations"], after["weight_hash"]) == (before["total_observations"],
                                                                       before["weight_hash"])
        assert actor.surprise(*m_vec(pin))["score"] >= min(never_seen_surprises(actor)) - 0.05


def test_a_retry_answered_from_the_history_keeps_the_steps_observe_answered() -> None:
    """After a restart a retry is answered from the history, where a renumbered item shows the
    step observe answered beside its new one: the answer carries both (the gateway reports
    the answered ones)."""
    from actors.wal import result_from_history

    write = {"surprise": 0.5, "weight_delta": 0.1, "patterns_activated": []}
    items = [{"request_id": "r", "step": 2, "answered_step": 3, "surprise": 0.4, "weight_hash": "h"},
             {"request_id": "r", "step": 3, "answered_step": 4, "surprise": 0.6, "weight_hash": "h", "write": write}]
    result = result_from_history(items, "r")
    assert (result["step"], result["answered"], result["surprises"]) == (3, [3, 4], [0.4, 0.6])
    alone = result_from_history([{**items[1], "step": 1, "answered_step": 2}], "r")  # a batch left with one item
    assert (alone["answered"], alone["surprises"]) == ([2], [0.6])
    plain = {k: v for k, v in items[1].items() if k != "answered_step"}  # never renumbered
    assert "answered" not in result_from_history([plain], "r")


def test_a_restore_racing_a_forget_never_brings_back_what_it_forgot(local_storage, make_actor) -> None:
    """A restore loads its tag before it takes the memory's locks; a forget that rebuilds the tag
    in that moment must not be undone by the state loaded before it (the helper's race: the
    forget reported done, yet the memory and its next checkpoint held the text again)."""
    m = make_actor(local_storage, q("m"))
    feed(m, A[:3] + [X])
    m.checkpoint("t0")
    feed(m, A[3:6])
    load, started, jobs = m._ckpts.load, [], []

    def load_then_forget(info, *args, **kwargs):  # the forget's swap lands between load and locks
        state = load(info, *args, **kwargs)
        if not started:  # once, and not for the job's own loads
            started.append(True)
            jobs.append(forget(m, {"text": X}))
        return state

    m._ckpts.load = load_then_forget
    restored = m.restore("t0")
    assert jobs[0]["status"] == "done" and jobs[0]["forgotten"] == 1
    rebuilt = local_storage.metadata.get_checkpoint(m._qname, "t0")
    assert restored["weight_hash"] == rebuilt["weight_hash"] == m.stats()["weight_hash"]
    assert find_text(local_storage, m._qname, X) == []
    assert m.surprise(*m_vec(X))["score"] >= min(never_seen_surprises(m)) - 0.05


def test_a_retried_start_is_the_same_job_only_if_it_names_the_same_texts() -> None:
    """While a job holds its selector its texts are compared; a finished dry run compares a
    digest; a finished forget keeps neither, so a retry naming texts the memory still holds is
    refused (it would be told "done" while they stay learned)."""
    from actors.forgetting import _digest, _same_start
    from errors import RequestIdReused

    def start(text: str, **fields) -> dict:
        selector = {"text": text}
        return {"job_id": "j", "status": "running", "mode": "exact", "dry_run": False, "checkpoints": "rebuild",
                "forks": False, "selection": {"kind": "text", "texts": 1}, "selector": selector,
                "selector_digest": _digest(selector), **fields}

    running = start(X)
    assert _same_start(running, start(X), lambda: True) is running
    with pytest.raises(RequestIdReused, match="texts"):
        _same_start(running, start("another text"), lambda: False)
    dry = start(X, status="done", dry_run=True, selector=None)
    assert _same_start(dry, start(X, dry_run=True), lambda: True) is dry
    with pytest.raises(RequestIdReused, match="texts"):
        _same_start(dry, start("another text", dry_run=True), lambda: True)
    done = start(X, status="done", selector=None, selector_digest=None)
    assert _same_start(done, start(X), lambda: False) is done  # nothing of it left: that forget
    with pytest.raises(RequestIdReused, match="still holds"):
        _same_start(done, start("another text"), lambda: True)


def test_a_text_selects_its_copies_in_other_case_or_punctuation(local_storage, make_actor) -> None:
    """"carol's pin is 9981" and "Carol's PIN is 9981." are stored as two records: a forget of
    either wording takes both (it took the one written exactly so, and a forget of the other
    wording found nothing), and only those: another PIN stays."""
    m, t = make_actor(local_storage, q("m")), make_actor(local_storage, q("t"))
    pin, loud, other = "carol's pin is 9981", "Carol's  PIN is 9981.", "carol's pin is 9982"
    feed(m, A[:3] + [pin] + A[3:6] + [loud, other])
    feed(t, A[:3] + A[3:6] + [other])
    job = forget(m, {"text": "CAROL'S PIN IS 9981!"}, dry_run=True)
    assert sorted(o["text"] for o in job["report"]["observations"]) == sorted([pin, loud])
    job = forget(m, {"text": "CAROL'S PIN IS 9981!"})
    assert job["status"] == "done" and job["exact"] is True and job["forgotten"] == 2, job
    assert_twins(m, t, [pin, other, A[1]])
    assert find_text(local_storage, m._qname, pin) == find_text(local_storage, m._qname, loud) == []
