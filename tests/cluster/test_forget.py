"""Forgetting through the control plane, with real actors: a SIGKILL in the middle of a job
(it resumes, and nothing acknowledged is lost), a delete in the middle of a job (the audit
keeps it) and the same forget applied to a fork."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from errors import MemoryNotFound
from tests.actors.forget_helpers import find_text
from tests.cluster.helpers import SMALL, encode, kill_actor, wait_until

# chunk_size 1: a batch is learned item by item, so a replay takes long enough to be killed in.
SLOW = {**SMALL, "chunk_size": 1}
X = "Bob's salary is 123,456 a year"


def batches(prefix: str, count: int, size: int) -> list[list[str]]:
    texts = [f"{prefix} {i}: valve {i % 11} pressure {i * 17 % 97}" for i in range(count)]
    return [texts[i : i + size] for i in range(0, count, size)]


def observe(arun, cluster, tenant: str, name: str, texts: list[str]) -> dict:
    return arun(cluster.observe(tenant, name, encode(texts), texts))


def wait_job(arun, cluster, tenant: str, name: str, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = arun(cluster.forget_status(tenant, name, job_id))
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")


def memory_and_twin(arun, cluster, tenant: str) -> None:
    """"m" learns X among three other facts, one at a time; "twin" the same without X."""
    for name in ("m", "twin"):
        arun(cluster.create_memory(tenant, name, SMALL))
    before, after = ["the pump is red", "the tank holds 40 litres"], ["valves are checked weekly"]
    for text in before + [X] + after:
        observe(arun, cluster, tenant, "m", [text])
    for text in before + after:
        observe(arun, cluster, tenant, "twin", [text])


def test_sigkill_mid_job_resumes_and_loses_nothing(shared_cluster, arun, tenant):
    cluster = shared_cluster()
    for name in ("m", "twin"):
        arun(cluster.create_memory(tenant, name, SLOW))
    stream = batches("reading", 1200, 200)
    stream.insert(1, [X])
    for texts in stream:
        observe(arun, cluster, tenant, "m", texts)
        if texts != [X]:
            observe(arun, cluster, tenant, "twin", texts)
    job = arun(cluster.forget(tenant, "m", {"selector": {"text": X}, "mode": "exact"}, {"key": "test"}))
    assert wait_until(lambda: arun(cluster.forget_status(tenant, "m", job["job_id"]))["status"] == "running",
                      every=0.01)
    during = ["written while the job ran", "and acknowledged before the kill"]
    for name in ("m", "twin"):  # acknowledged while the job runs: applied live, kept after the swap
        observe(arun, cluster, tenant, name, during)
    kill_actor(cluster.settings.namespace, f"{tenant}/m")
    done = wait_job(arun, cluster, tenant, "m", job["job_id"])  # the read wakes it; the job resumes
    assert done["status"] == "done" and done["exact"] and done["forgotten"] == 1
    assert done["attempts"] >= 2  # it really was stopped mid-way and run again
    m, twin = arun(cluster.stats(tenant, "m")), arun(cluster.stats(tenant, "twin"))
    assert m["weight_hash"] == twin["weight_hash"] and m["total_observations"] == twin["total_observations"]
    assert find_text(cluster.storage, f"{tenant}/m", X) == []


def test_deleting_a_memory_mid_job_leaves_the_job_in_the_audit(shared_cluster, arun, tenant):
    """The delete writes the final audit record of a job it stops (its actor is killed and
    never writes one), with the fields of every other record and never the text."""
    cluster = shared_cluster()
    arun(cluster.create_memory(tenant, "gone", SLOW))
    stream = batches("reading", 600, 200)
    stream.insert(1, [X])
    for texts in stream:
        observe(arun, cluster, tenant, "gone", texts)
    dry = arun(cluster.forget(tenant, "gone", {"selector": {"text": X}, "dry_run": True}, {"key": "test"}))
    assert wait_job(arun, cluster, tenant, "gone", dry["job_id"])["status"] == "done"
    job = arun(cluster.forget(tenant, "gone", {"selector": {"text": X}, "mode": "exact"}, {"key": "test"}))
    assert arun(cluster.forget_status(tenant, "gone", job["job_id"]))["status"] in ("pending", "running")
    arun(cluster.delete_memory(tenant, "gone"))
    with pytest.raises(MemoryNotFound):
        arun(cluster.forget_status(tenant, "gone", job["job_id"]))
    records = arun(cluster.audit(tenant, 1000))["records"]
    (done,) = [r for r in records if r["job_id"] == dry["job_id"]]
    (stopped,) = [r for r in records if r["job_id"] == job["job_id"]]
    assert (stopped["status"], stopped["error"]) == ("failed", "memory_deleted"), stopped
    assert set(stopped) == set(done)
    assert (stopped["tenant"], stopped["memory"], stopped["key"], stopped["mode"], stopped["dry_run"]) == (
        tenant, "gone", "test", "exact", False)
    assert stopped["selection"] == {"kind": "text", "texts": 1} and stopped["forgotten"] == 0
    assert X not in json.dumps(records)


def test_forks_made_after_the_text_forget_it_too(shared_cluster, arun, tenant):
    cluster = shared_cluster()
    memory_and_twin(arun, cluster, tenant)
    arun(cluster.fork(tenant, "m", "m-fork"))
    arun(cluster.fork(tenant, "twin", "twin-fork"))
    for name in ("m-fork", "twin-fork"):
        observe(arun, cluster, tenant, name, ["the fork learned this on its own"])
    job = arun(cluster.forget(tenant, "m", {"selector": {"text": X}, "forks": True}, {"key": "test"}))
    done = wait_job(arun, cluster, tenant, "m", job["job_id"])
    (fork,) = done["report"]["forks"]
    # "done" is done on the forks too: a caller waiting for it must not read a fork still holding X
    assert fork["name"] == "m-fork" and fork["contains"] is True and fork["status"] == "done", fork
    child = arun(cluster.forget_status(tenant, "m-fork", fork["job_id"]))
    # the fork's count names what left it: the item was in the state it was made from
    assert child["exact"] is True and child["forgotten"] == 1 and child["report"]["forgotten"] == 1, child
    seen = lambda n: [o["text"] for o in arun(cluster.history(tenant, n))["observations"]]  # noqa: E731
    for a, b in (("m", "twin"), ("m-fork", "twin-fork")):
        mine, twins = arun(cluster.stats(tenant, a)), arun(cluster.stats(tenant, b))
        assert (mine["weight_hash"], mine["total_observations"]) == (twins["weight_hash"], twins["total_observations"])
        assert seen(a) == seen(b)
    assert find_text(cluster.storage, f"{tenant}/m-fork", X) == []
    # A fork that learned a little keeps its log over the new base it shares with its
    # siblings, as a hibernated fork does: no new head of its own (a manifest and a segment).
    (auto,) = [c for c in cluster.storage.metadata.list_checkpoints(f"{tenant}/m-fork") if c["tag"].startswith("auto@")]
    assert auto["seq"] == 0 and child["report"]["bytes_written"] < auto["size"] / 10, (child["report"], auto)
    kill_actor(cluster.settings.namespace, f"{tenant}/m-fork")  # woken from that base and its log
    after = [observe(arun, cluster, tenant, name, ["and one more after a restart"])["weight_hash"]
             for name in ("m-fork", "twin-fork")]
    assert after[0] == after[1]


def test_done_means_done_on_forks_of_forks_too(shared_cluster, arun, tenant):
    """p -> k1 -> k2 (a fork of a fork): the job on p read done once k1's run had, while k2's
    still held the text for a moment (a reviewer saw a PIN answered from a grandchild then)."""
    cluster = shared_cluster()
    secret = f"the vault code is {time.time_ns()}"  # in no other memory of the shared store
    arun(cluster.create_memory(tenant, "p", SMALL))
    observe(arun, cluster, tenant, "p", ["the pump is red", secret, "valves are checked weekly"])
    arun(cluster.fork(tenant, "p", "k1"))
    arun(cluster.fork(tenant, "k1", "k2"))
    observe(arun, cluster, tenant, "k2", ["k2 learned this on its own"])
    job = arun(cluster.forget(tenant, "p", {"selector": {"text": secret}, "forks": True}, {"key": "test"}))
    done = wait_job(arun, cluster, tenant, "p", job["job_id"])
    assert done["status"] == "done" and [(f["name"], f["status"]) for f in done["report"]["forks"]] == [("k1", "done")]
    k1 = arun(cluster.forget_status(tenant, "k1", done["report"]["forks"][0]["job_id"]))
    # k2 was made from k1 before k1 wrote anything: it holds what k1 inherited from p
    assert [(f["name"], f["contains"], f["status"]) for f in k1["report"]["forks"]] == [("k2", True, "done")]
    for name in ("p", "k1", "k2"):
        assert find_text(cluster.storage, f"{tenant}/{name}", secret) == [], name
        top = arun(cluster.infer(tenant, name, encode([secret])[0], secret, top_k=3))["attention_weights"]
        assert secret not in [item["pattern"] for item in top], name


def test_a_second_forget_waits_until_the_first_is_done_on_the_forks(make_cluster, arun, tenant, monkeypatch):
    """The memory's own job done, its forks' runs not: a second job started then met the forks
    busy, left one holding its text, and read done all the same. Now it is refused until the
    first reads done (the forks' phase is held open here)."""
    from errors import Busy

    cluster = make_cluster()
    arun(cluster.create_memory(tenant, "p", SMALL))
    observe(arun, cluster, tenant, "p", ["alpha secret one", "beta secret two", "gamma plain three"])
    arun(cluster.fork(tenant, "p", "p-kid"))

    async def forks_still_running(*_args) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(cluster._forget, "_drive", forks_still_running)
    first = arun(cluster.forget(tenant, "p", {"selector": {"text": "alpha secret one"}, "forks": True},
                                {"key": "test"}, request_id="first"))
    with pytest.raises(Busy, match="still running on its forks"):
        arun(cluster.forget(tenant, "p", {"selector": {"text": "beta secret two"}, "forks": True}, {"key": "test"}))
    again = arun(cluster.forget(tenant, "p", {"selector": {"text": "alpha secret one"}, "forks": True},
                                {"key": "test"}, request_id="first"))  # a retry of the first is its job
    assert again["job_id"] == first["job_id"]


def test_a_steps_forget_on_forks_takes_what_they_inherited_not_their_own_steps(shared_cluster, arun, tenant):
    """Steps are the parent's answers: a fork made at step 4 holds the parent's steps 1-4, and
    its own step 5 is another observation than the parent's step 5."""
    cluster = shared_cluster()
    for name in ("p", "twin"):
        arun(cluster.create_memory(tenant, name, SMALL))
    before = ["the pump is red", "the tank holds 40 litres"]
    for text in before + [X, "valves are checked weekly"]:  # steps 1-4
        observe(arun, cluster, tenant, "p", [text])
    for text in before:
        observe(arun, cluster, tenant, "twin", [text])
    arun(cluster.fork(tenant, "p", "p-fork"))
    arun(cluster.fork(tenant, "twin", "twin-fork"))
    observe(arun, cluster, tenant, "p", ["the parent's own step 5"])
    for name in ("p-fork", "twin-fork"):
        observe(arun, cluster, tenant, name, ["the fork's own step 5"])
    job = arun(cluster.forget(tenant, "p", {"selector": {"steps": {"from": 3, "to": 5}}, "forks": True},
                              {"key": "test"}))
    assert wait_job(arun, cluster, tenant, "p", job["job_id"])["forgotten"] == 3
    status = lambda: arun(cluster.forget_status(tenant, "p", job["job_id"]))["report"]["forks"][0]  # noqa: E731
    assert wait_until(lambda: status()["status"] == "done", timeout=60), status()
    assert arun(cluster.forget_status(tenant, "p-fork", status()["job_id"]))["forgotten"] == 2
    for a, b in (("p", "twin"), ("p-fork", "twin-fork")):
        mine, twins = arun(cluster.stats(tenant, a)), arun(cluster.stats(tenant, b))
        assert (mine["weight_hash"], mine["total_observations"]) == (twins["weight_hash"], twins["total_observations"])


def test_a_fork_an_earlier_forget_left_alone_keeps_what_only_that_forget_removed(make_cluster, arun, tenant):
    """Forget beta on the parent only, then gamma with forks: the parent's log no longer
    replays to the state the fork was made from (it held beta), so the fork must not be rebuilt
    from it: its run refuses as not exact and the fork keeps everything it had."""
    cluster = make_cluster()
    alpha, beta, gamma = "alpha fact one", "beta fact two", "gamma fact three"
    arun(cluster.create_memory(tenant, "p", SMALL))
    observe(arun, cluster, tenant, "p", [alpha, beta])
    observe(arun, cluster, tenant, "p", [gamma])
    arun(cluster.fork(tenant, "p", "p-kid"))
    kid = arun(cluster.stats(tenant, "p-kid"))

    first = arun(cluster.forget(tenant, "p", {"selector": {"text": beta}}, {"key": "test"}))
    done = wait_job(arun, cluster, tenant, "p", first["job_id"])
    assert done["status"] == "done" and done["report"]["forks"][0]["contains"] is True
    second = arun(cluster.forget(tenant, "p", {"selector": {"text": gamma}, "forks": True}, {"key": "test"}))
    wait_job(arun, cluster, tenant, "p", second["job_id"])
    status = lambda: arun(cluster.forget_status(tenant, "p", second["job_id"]))["report"]["forks"][0]  # noqa: E731
    assert wait_until(lambda: status()["status"] in ("done", "failed"), timeout=60), status()
    assert status()["status"] == "failed"
    after = arun(cluster.stats(tenant, "p-kid"))
    assert (after["total_observations"], after["weight_hash"]) == (kid["total_observations"], kid["weight_hash"])
    assert arun(cluster.infer(tenant, "p-kid", encode([beta])[0], beta, top_k=1))["response"] == beta
    # beta again, now with forks: the parent holds none of it, yet the fork that does is listed
    # and its run says it cannot be exact, instead of a report of "nothing ever observed".
    third = arun(cluster.forget(tenant, "p", {"selector": {"text": beta}, "forks": True}, {"key": "test"}))
    assert wait_job(arun, cluster, tenant, "p", third["job_id"])["forgotten"] == 0
    status = lambda: arun(cluster.forget_status(tenant, "p", third["job_id"]))["report"]["forks"]  # noqa: E731
    assert wait_until(lambda: status() and status()[0]["status"] in ("done", "failed"), timeout=60), status()
    (fork,) = status()
    assert fork["name"] == "p-kid" and fork["status"] == "failed"
    assert arun(cluster.forget_status(tenant, "p-kid", fork["job_id"]))["error"]["code"] == "history_unavailable"
    assert arun(cluster.stats(tenant, "p-kid"))["weight_hash"] == kid["weight_hash"]


@pytest.mark.parametrize("source_tag", ["v1", None])
def test_a_fork_whose_source_a_forget_rebuilt_meanwhile_never_holds_the_text(shared_cluster, arun, tenant,
                                                                            monkeypatch, source_tag):
    """A fork reads its source's checkpoint entry, then registers and copies it: a forget that
    rebuilds the source in that moment does not list the fork (not registered yet), so the fork
    must not copy the state from before the forget (it would hold the text, unreported). It
    starts from the rebuilt state instead, as if made just after the forget."""
    cluster = shared_cluster()
    memory_and_twin(arun, cluster, tenant)
    arun(cluster.checkpoint(tenant, "m", "v1"))
    source_info, forgets = cluster._source_info, []

    async def forget_lands_meanwhile(qname, tag):
        info = await source_info(qname, tag)
        if not forgets and qname.endswith("/m"):  # once: the forget's swap between read and copy
            job = await cluster.forget(tenant, "m", {"selector": {"text": X}}, {"key": "test"})
            forgets.append(job)
            while (await cluster.forget_status(tenant, "m", job["job_id"]))["status"] not in ("done", "failed"):
                await asyncio.sleep(0.05)
        return info

    monkeypatch.setattr(cluster, "_source_info", forget_lands_meanwhile)
    forked = arun(cluster.fork(tenant, "m", "m-fork", source_tag=source_tag))
    assert forgets and wait_job(arun, cluster, tenant, "m", forgets[0]["job_id"])["status"] == "done"
    twin = arun(cluster.stats(tenant, "twin"))
    assert forked["new_hash"] == twin["weight_hash"] == arun(cluster.stats(tenant, "m-fork"))["weight_hash"]
    assert find_text(cluster.storage, f"{tenant}/m-fork", X) == []


def test_an_approximate_forget_with_forks_runs_on_them_too(shared_cluster, arun, tenant):
    """It listed no forks and left them holding the text, reading done. A fork made before the
    text learned it never: its run erases nothing and leaves its state and history as they were."""
    cluster = shared_cluster()
    secret = f"Zed's bank PIN is {time.time_ns()}"
    arun(cluster.create_memory(tenant, "p", SMALL))
    observe(arun, cluster, tenant, "p", ["the cafeteria opens at 7"])
    arun(cluster.fork(tenant, "p", "early"))
    observe(arun, cluster, tenant, "p", [secret, "parking is on level 3"])
    arun(cluster.fork(tenant, "p", "kid"))
    for name in ("kid", "early"):
        observe(arun, cluster, tenant, name, [f"{name} learned this on its own"])
    early_before = arun(cluster.stats(tenant, "early"))["weight_hash"]
    job = arun(cluster.forget(tenant, "p", {"selector": {"text": secret}, "mode": "approximate", "forks": True},
                              {"key": "test"}))
    done = wait_job(arun, cluster, tenant, "p", job["job_id"])
    assert done["status"] == "done" and done["exact"] is False, done
    runs = {f["name"]: f for f in done["report"]["forks"]}
    assert set(runs) == {"kid", "early"} and all(f["status"] == "done" for f in runs.values()), runs
    kid = arun(cluster.forget_status(tenant, "kid", runs["kid"]["job_id"]))
    early = arun(cluster.forget_status(tenant, "early", runs["early"]["job_id"]))
    assert kid["forgotten"] == 1 and early["forgotten"] == 0, (kid, early)
    assert arun(cluster.stats(tenant, "early"))["weight_hash"] == early_before
    for name in ("p", "kid"):
        assert find_text(cluster.storage, f"{tenant}/{name}", secret) == [], name
    texts = [o["text"] for o in arun(cluster.history(tenant, "kid"))["observations"]]
    assert "kid learned this on its own" in texts and secret not in texts


def test_the_forks_runs_start_when_the_job_commits_not_after_its_cleanup(shared_cluster, arun, tenant):
    """The memory's cleanup may wait for another collection (its lock held here). The forks'
    runs used to start only after it: a delete of the memory in that wait left every fork
    holding the text, and the audit said done."""
    cluster = shared_cluster()
    secret = f"Morgan's tax ID is {time.time_ns()}"
    arun(cluster.create_memory(tenant, "p", SMALL))
    observe(arun, cluster, tenant, "p", [secret, "the pump is red"])
    arun(cluster.fork(tenant, "p", "kid"))
    meta = cluster.storage.metadata
    assert meta.gc_lock("a-long-collection", 600)
    try:
        job = arun(cluster.forget(tenant, "p", {"selector": {"text": secret}, "forks": True}, {"key": "test"}))
        child = lambda: [j for j in meta.jobs(f"{tenant}/kid") if j.get("parent_job") == job["job_id"]]  # noqa: E731
        assert wait_until(lambda: arun(cluster.forget_status(tenant, "p", job["job_id"])) and child(),
                          timeout=120), "the fork's run did not start while the memory's cleanup waited"
        arun(cluster.delete_memory(tenant, "p"))
    finally:
        meta.gc_unlock("a-long-collection")
    (started,) = child()
    assert wait_until(lambda: arun(cluster.forget_status(tenant, "kid", started["job_id"]))["status"] == "done",
                      timeout=120)
    assert find_text(cluster.storage, f"{tenant}/kid", secret) == []
