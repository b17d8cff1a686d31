"""Forget over REST and through the Python client, against the running gateway: a dry run, an
exact forget equal to a twin that never saw the text, the job's status and report, the audit
trail (which key, never the text), and bad requests."""

from __future__ import annotations

import hashlib
import json
import time

from tests.serve.helpers import error_of, ok

HASH = {"encoder": "hash", "memory_width": 128, "pattern_slots": 256, "value_dim": 64}
X = "Carol's passport number is X1234567"
A = ["The staging server restarts at 02:00.", "Deploys are frozen on Fridays."]
B = ["The VPN needs a hardware key.", "Lunch is at noon."]


def wait(api, name: str, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = ok(api.get(f"/v1/memories/{name}/forget/{job_id}"))
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_forget_over_rest_equals_the_twin_and_is_audited(api, api_b, gateway, fresh_name):
    m, t = fresh_name, fresh_name + "-twin"
    for name in (m, t):
        ok(api.post("/v1/memories", json={"name": name, "config": HASH}), 201)
    ok(api.post(f"/v1/memories/{m}/observe", json={"contexts": A + [X]}))
    ok(api.post(f"/v1/memories/{t}/observe", json={"contexts": A}))
    for name in (m, t):
        for text in B:
            ok(api.post(f"/v1/memories/{name}/observe", json={"context": text}))

    dry = ok(api.post(f"/v1/memories/{m}/forget", json={"text": X, "dry_run": True}), 202)
    assert dry["status"] in ("pending", "running", "done") and len(dry["job_id"]) == 32
    listed = wait(api, m, dry["job_id"])
    assert listed["forgotten"] == 1 and listed["report"]["observations"][0]["text"] == X

    started = ok(api.post(f"/v1/memories/{m}/forget", json={"text": X}), 202)
    job = wait(api, m, started["job_id"])
    assert job["status"] == "done" and job["exact"] is True and job["forgotten"] == 1
    assert X not in json.dumps(job)  # a finished job never repeats the text
    stats_m, stats_t = ok(api.get(f"/v1/memories/{m}/stats")), ok(api.get(f"/v1/memories/{t}/stats"))
    assert stats_m["weight_hash"] == stats_t["weight_hash"] == job["weight_hash"]
    for prompt in (X, A[0], "What is Carol's passport number?"):
        answers = [ok(api.post(f"/v1/memories/{n}/infer", json={"prompt": prompt})) for n in (m, t)]
        assert answers[0] == answers[1]
    history = ok(api.get(f"/v1/memories/{m}/history"))["observations"]
    assert [h["text"] for h in history] == A + B

    audit = ok(api.get("/v1/audit", params={"limit": 1000}))["records"]
    mine = [r for r in audit if r["job_id"] in (dry["job_id"], started["job_id"])]
    key = "key:" + hashlib.sha256(gateway.key_a.encode()).hexdigest()[:12]
    assert [(r["dry_run"], r["forgotten"], r["exact"], r["key"]) for r in mine] == [
        (True, 1, True, key), (False, 1, True, key)]
    assert all(r["selection"] == {"kind": "text", "texts": 1} for r in mine)
    assert X not in json.dumps(audit)
    assert not {r["job_id"] for r in ok(api_b.get("/v1/audit"))["records"]} & {started["job_id"]}


def test_bad_forget_requests_say_what_to_fix(api, fresh_name):
    ok(api.post("/v1/memories", json={"name": fresh_name, "config": HASH}), 201)
    two = error_of(api.post(f"/v1/memories/{fresh_name}/forget", json={"text": "a", "domain": "d"}), 422)
    assert "exactly one selector" in two["message"] or "exactly one selector" in json.dumps(two)
    backwards = api.post(f"/v1/memories/{fresh_name}/forget", json={"steps": {"from": 5, "to": 2}})
    assert backwards.status_code == 422
    mode = api.post(f"/v1/memories/{fresh_name}/forget", json={"text": "a", "mode": "maybe"})
    assert mode.status_code == 422
    assert error_of(api.get(f"/v1/memories/{fresh_name}/forget/{'0' * 32}"), 404)["code"] == "not_found"
    assert api.get(f"/v1/memories/{fresh_name}/forget/not-a-job").status_code == 422
    assert error_of(api.post("/v1/memories/no-such-memory/forget", json={"text": "a"}), 404)


def test_client_forget_waits_and_reads_the_audit(gateway, fresh_name):
    from neural_memory import Client

    with Client(gateway.base_url, api_key=gateway.key_a, timeout=120) as nm:
        nm.create_memory(fresh_name, HASH)
        nm.observe(fresh_name, A + [X], domain="notes")
        nm.observe(fresh_name, B[0])
        job = nm.forget(fresh_name, steps=(2, 3), dry_run=True)
        listed = nm.wait_for_forget(fresh_name, job)
        assert [o["text"] for o in listed.report["observations"]] == [A[1], X]
        done = nm.wait_for_forget(fresh_name, nm.forget(fresh_name, domain="notes"))
        assert (done.status, done.exact, done.forgotten) == ("done", True, 3)
        assert nm.stats(fresh_name).total_observations == 1
        assert done.job_id in {r.job_id for r in nm.audit(limit=1000).records}


def test_a_second_forget_while_one_runs_is_answered_at_once_with_503_and_retry_after(api, fresh_name):
    """One job per memory: the second is refused straight away (the memory is live; waiting in
    the call would not free it), and the first goes on to finish."""
    slow = {**HASH, "chunk_size": 1}  # item by item: the replay lasts while the second call comes
    ok(api.post("/v1/memories", json={"name": fresh_name, "config": slow}), 201)
    ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": X}))
    for start in range(0, 2048, 256):
        contexts = [f"reading {i}: valve {i % 11} pressure {i * 17 % 97}" for i in range(start, start + 256)]
        ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"contexts": contexts}))
    first = ok(api.post(f"/v1/memories/{fresh_name}/forget", json={"text": X}), 202)
    running = ok(api.get(f"/v1/memories/{fresh_name}/forget/{first['job_id']}"))
    second = api.post(f"/v1/memories/{fresh_name}/forget", json={"text": A[0]})
    if running["status"] != "done" and running["progress"] < 0.5:  # seconds of replay still ahead
        assert second.status_code == 503, second.text
        assert error_of(second, 503)["code"] == "busy" and first["job_id"] in error_of(second, 503)["message"]
        assert int(second.headers["Retry-After"]) >= 1
        assert ok(api.get(f"/v1/memories/{fresh_name}/forget/{first['job_id']}"))["status"] != "done"
    assert wait(api, fresh_name, first["job_id"])["status"] == "done"


def test_a_forget_resent_with_its_idempotency_key_finds_its_job(api, fresh_name):
    """A client that lost the answer to a start sends it again: the same key gets the same job,
    not a second one; another key starts another."""
    ok(api.post("/v1/memories", json={"name": fresh_name, "config": HASH}), 201)
    ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"contexts": A + [X]}))
    first = ok(api.post(f"/v1/memories/{fresh_name}/forget", json={"text": X}, headers={"Idempotency-Key": "f-1"}), 202)
    assert wait(api, fresh_name, first["job_id"])["forgotten"] == 1
    again = ok(api.post(f"/v1/memories/{fresh_name}/forget", json={"text": X}, headers={"Idempotency-Key": "f-1"}), 202)
    assert again["job_id"] == first["job_id"] and again["forgotten"] == 1
    reused = api.post(f"/v1/memories/{fresh_name}/forget", json={"text": X, "dry_run": True},
                      headers={"Idempotency-Key": "f-1"})
    assert error_of(reused, 409)["code"] == "request_id_reused" and "dry_run" in error_of(reused, 409)["message"]
    # The same key with another text the memory still holds is not the finished forget: it
    # would be told "done, forgotten 1" while that text stays learned.
    reused = api.post(f"/v1/memories/{fresh_name}/forget", json={"text": A[0]}, headers={"Idempotency-Key": "f-1"})
    assert error_of(reused, 409)["code"] == "request_id_reused" and "still holds" in error_of(reused, 409)["message"]
    assert A[0] in [o["text"] for o in ok(api.get(f"/v1/memories/{fresh_name}/history"))["observations"]]
    dry = ok(api.post(f"/v1/memories/{fresh_name}/forget", json={"text": A[0], "dry_run": True},
                      headers={"Idempotency-Key": "d-1"}), 202)
    assert wait(api, fresh_name, dry["job_id"])["status"] == "done"
    assert ok(api.post(f"/v1/memories/{fresh_name}/forget", json={"text": A[0], "dry_run": True},
                       headers={"Idempotency-Key": "d-1"}), 202)["job_id"] == dry["job_id"]
    reused = api.post(f"/v1/memories/{fresh_name}/forget", json={"text": A[1], "dry_run": True},
                      headers={"Idempotency-Key": "d-1"})  # a dry run's texts are compared by digest
    assert error_of(reused, 409)["code"] == "request_id_reused" and "texts" in error_of(reused, 409)["message"]
    other = ok(api.post(f"/v1/memories/{fresh_name}/forget", json={"text": X}, headers={"Idempotency-Key": "f-2"}), 202)
    assert other["job_id"] != first["job_id"]
    assert wait(api, fresh_name, other["job_id"])["forgotten"] == 0  # a second job: nothing left to forget


def test_a_retry_after_a_forget_renumbered_its_write_is_told_the_steps_observe_answered(api, fresh_name):
    """A forget renumbers the steps after what it removes; a retry of a write answered before
    it still names that write's items by the steps observe answered (what a `steps` selector
    takes), so a client whose first reply was lost forgets what it means to."""
    m = fresh_name
    ok(api.post("/v1/memories", json={"name": m, "config": HASH}), 201)
    first = ok(api.post(f"/v1/memories/{m}/observe", json={"contexts": [A[0], X]}, headers={"Idempotency-Key": "k1"}))
    second = ok(api.post(f"/v1/memories/{m}/observe", json={"contexts": B}, headers={"Idempotency-Key": "k2"}))
    assert [i["step"] for i in first["items"]] == [1, 2] and [i["step"] for i in second["items"]] == [3, 4]
    assert wait(api, m, ok(api.post(f"/v1/memories/{m}/forget", json={"text": X}), 202)["job_id"])["status"] == "done"

    retried = ok(api.post(f"/v1/memories/{m}/observe", json={"contexts": B}, headers={"Idempotency-Key": "k2"}))
    assert [i["step"] for i in retried["items"]] == [3, 4] and retried["step"] == 4
    assert retried["weight_hash"] == ok(api.get(f"/v1/memories/{m}/stats"))["weight_hash"]  # the rebuilt memory's
    dry = ok(api.post(f"/v1/memories/{m}/forget", json={"steps": {"from": 3, "to": 3}, "dry_run": True}), 202)
    assert [o["text"] for o in wait(api, m, dry["job_id"])["report"]["observations"]] == [B[0]]
    kept = ok(api.post(f"/v1/memories/{m}/observe", json={"contexts": [A[0], X]}, headers={"Idempotency-Key": "k1"}))
    assert [i["step"] for i in kept["items"]] == [1] and kept["step"] == 1  # X's item is gone, not re-learned
    assert ok(api.get(f"/v1/memories/{m}/stats"))["total_observations"] == 3
