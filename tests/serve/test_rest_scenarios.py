"""SPEC §6 demo scenarios over real HTTP against the running Serve app (REST).

6.1's restart half lives in test_restart.py (it needs a whole server of its own).
Assertions compare the memory with itself (before vs after learning, related vs unrelated),
never against a fixed score, so they test behaviour without pinning model numbers.
"""

from __future__ import annotations

from tests.serve.helpers import error_of, ok

GROKKING = (
    "Grokking is when a model suddenly generalizes after extensive overfitting. It was "
    "discovered by OpenAI in 2022 and shows delayed generalization."
)
PYTHON_PATTERN = [
    "In Python, use `with open()` for file handling",
    "Always use context managers for resources in Python",
    "The `with` statement ensures cleanup in Python",
]


def test_6_1_teaching_a_new_concept(api, fresh_name):
    created = ok(api.post("/v1/memories", json={"name": fresh_name}), 201)
    assert created["name"] == fresh_name and created["weight_parameters"] > 0

    before = ok(api.post(f"/v1/memories/{fresh_name}/infer", json={"prompt": "What is grokking in ML?"}))
    novelty = ok(api.post(f"/v1/memories/{fresh_name}/surprise", json={"input": "Explain grokking"}))
    assert novelty["score"] > 0.5 and novelty["recommendation"] == "learn"

    learned = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": GROKKING}))
    assert learned["surprise"] > 0.5
    assert learned["weight_hash"] != created["weight_hash"] and learned["step"] == 1

    after = ok(api.post(f"/v1/memories/{fresh_name}/infer", json={"prompt": "What is grokking in ML?"}))
    assert after["confidence"] > before["confidence"]
    assert "grokking" in after["response"].lower()
    assert after["attention_weights"] and "pattern" in after["attention_weights"][0]

    known = ok(api.post(f"/v1/memories/{fresh_name}/surprise", json={"input": "Explain grokking"}))
    assert known["score"] < novelty["score"]
    stats = ok(api.get(f"/v1/memories/{fresh_name}/stats"))
    assert stats["total_observations"] == 1 and stats["weight_hash"] == learned["weight_hash"]


def test_6_2_pattern_recognition(api, fresh_name):
    ok(api.post("/v1/memories", json={"name": fresh_name}), 201)
    unrelated = "The Eiffel Tower was finished in 1889 for the World's Fair in Paris."
    related = "Should I use with statement for database connections?"
    base = ok(api.post(f"/v1/memories/{fresh_name}/surprise", json={"input": related}))["score"]
    for text in PYTHON_PATTERN:
        ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": text, "domain": "python"}))

    near = ok(api.post(f"/v1/memories/{fresh_name}/surprise", json={"input": related}))
    far = ok(api.post(f"/v1/memories/{fresh_name}/surprise", json={"input": unrelated}))
    assert near["score"] < base and near["score"] < far["score"]
    assert near["nearest_pattern"]

    answer = ok(api.post(f"/v1/memories/{fresh_name}/infer",
                         json={"prompt": "How should I handle file resources?", "top_k": 3}))
    assert answer["response"] and len(answer["attention_weights"]) <= 3
    attended = " ".join(w["pattern"] for w in answer["attention_weights"]).lower()
    assert "with" in attended or "context manager" in attended

    stats = ok(api.get(f"/v1/memories/{fresh_name}/stats"))
    assert stats["total_observations"] == 3 and stats["episodes"] == 3 and "python" in stats["domains"]
    ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": PYTHON_PATTERN[0], "domain": "python"}))
    again = ok(api.get(f"/v1/memories/{fresh_name}/stats"))  # told twice: one record, two observations
    assert (again["total_observations"], again["episodes"]) == (4, 3)
    explained = ok(api.get(f"/v1/memories/{fresh_name}/explain", params={"top_k": 2}))
    assert 1 <= len(explained["patterns"]) <= 2 and explained["patterns"][0]["examples"]
    attention = ok(api.post(f"/v1/memories/{fresh_name}/attention_map", json={"query": related}))
    assert attention["attention_weights"]


def test_6_3_checkpoint_experiment_restore_fork(api, fresh_name):
    ok(api.post("/v1/memories", json={"name": fresh_name}), 201)
    for text in PYTHON_PATTERN:
        ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": text}))
    saved = ok(api.post(f"/v1/memories/{fresh_name}/checkpoints",
                        json={"tag": "stable-v1", "description": "before the experiment"}))
    assert saved["size_mb"] > 0 and saved["checkpoint_id"]
    again = api.post(f"/v1/memories/{fresh_name}/checkpoints", json={"tag": "stable-v1"})
    assert error_of(again, 409)["code"] == "checkpoint_conflict"

    for text in ["Risky refactor: globals everywhere", "Experiment: monkeypatch builtins"]:
        drifted = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": text}))
    assert drifted["weight_hash"] != saved["weight_hash"]

    restored = ok(api.post(f"/v1/memories/{fresh_name}/restore", json={"tag": "stable-v1"}))
    assert restored["restored"] is True and restored["weight_hash"] == saved["weight_hash"]
    assert restored["learning_since_checkpoint"] == 2
    assert ok(api.get(f"/v1/memories/{fresh_name}/stats"))["weight_hash"] == saved["weight_hash"]

    branch = f"{fresh_name}-feature"
    forked = ok(api.post(f"/v1/memories/{fresh_name}/fork",
                         json={"new_name": branch, "source_tag": "stable-v1"}))
    assert forked["forked"] is True and forked["new_hash"] == saved["weight_hash"]
    assert ok(api.get(f"/v1/memories/{branch}/stats"))["weight_hash"] == saved["weight_hash"]

    tags = ok(api.get(f"/v1/memories/{fresh_name}/checkpoints"))["checkpoints"]
    mine = [c for c in tags if c["tag"] == "stable-v1"]
    assert mine and mine[0]["description"] == "before the experiment"
    lineage = {m["name"]: m for m in ok(api.get("/v1/lineage"))["memories"]}
    assert lineage[branch]["parent"] == fresh_name and lineage[branch]["source_tag"] == "stable-v1"
    assert lineage[fresh_name]["checkpoints"] == tags and lineage[branch]["checkpoints"] == []  # auto ones hidden
    listed = {m["name"]: m for m in ok(api.get("/v1/memories"))["memories"]}
    assert listed[branch]["parent"] == fresh_name


def test_consolidate_history_and_delete(api, fresh_name):
    ok(api.post("/v1/memories", json={"name": fresh_name}), 201)
    for text in PYTHON_PATTERN + PYTHON_PATTERN[:1]:
        ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": text}))
    result = ok(api.post(f"/v1/memories/{fresh_name}/consolidate"))
    assert {"patterns_merged", "memory_compressed_by", "stability_score"} <= set(result)

    history = ok(api.get(f"/v1/memories/{fresh_name}/history", params={"limit": 2}))["observations"]
    assert [h["step"] for h in history] == [3, 4]
    assert history[-1]["text"].startswith("In Python")

    assert api.delete(f"/v1/memories/{fresh_name}").status_code == 204
    assert error_of(api.get(f"/v1/memories/{fresh_name}/stats"), 404)["code"] == "memory_not_found"
    assert fresh_name not in {m["name"] for m in ok(api.get("/v1/memories"))["memories"]}


def test_health_docs_metrics_and_dashboard(api, anon, gateway):
    assert ok(anon.get("/healthz"))["status"] == "ok"
    assert "/v1/memories/{name}/observe" in ok(anon.get("/openapi.json"))["paths"]
    assert anon.get("/docs").status_code == 200
    root = anon.get("/")
    assert root.status_code == 200

    # server-wide figures: a tenant's key is known but not allowed (403), a wrong key is not known (401)
    assert error_of(api.get("/metrics"), 403)["code"] == "forbidden"
    assert anon.get("/metrics", headers={"Authorization": "Bearer not-a-key-at-all"}).status_code == 401
    metrics = anon.get("/metrics", headers={"Authorization": f"Bearer {gateway.metrics_key}"})
    assert metrics.status_code == 200
    text = metrics.text
    assert "nmem_http_requests_total" in text and "nmem_live_actors" in text
    assert "nmem_observe_surprise_bucket" in text and "nmem_http_request_seconds_bucket" in text


def test_each_recalled_text_says_when_it_was_told(api, fresh_name):
    """Of two stored texts that disagree, an agent can tell which came later: each attention
    item carries the step its text was stored at (the step observe answered for it)."""
    ok(api.post("/v1/memories", json={"name": fresh_name}), 201)
    first = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": "Ana's team is Search."}))
    ok(api.post(f"/v1/memories/{fresh_name}/observe",
                json={"contexts": [f"Release {n} of the billing service fixed {n} bugs." for n in range(20)]}))
    later = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": "Ana's team is Ads."}))
    answer = ok(api.post(f"/v1/memories/{fresh_name}/infer", json={"prompt": "Which team is Ana on?", "top_k": 5}))
    steps = {item["pattern"]: item["step"] for item in answer["attention_weights"]}
    assert steps["Ana's team is Search."] == first["step"] == 1
    assert steps["Ana's team is Ads."] == later["step"] == 22
    shown = ok(api.post(f"/v1/memories/{fresh_name}/attention_map", json={"query": "Which team is Ana on?"}))
    assert {item["pattern"]: item["step"] for item in shown["attention_weights"]}["Ana's team is Ads."] == 22
