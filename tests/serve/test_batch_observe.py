"""Batch observe (`contexts`) and idempotent writes (`request_id` / `Idempotency-Key`), over REST and
MCP, against the session gateway."""

from __future__ import annotations

import anyio
import numpy as np
import pytest

import contract as C
from actors import ActorSettings
from memory import MemoryConfig, NeuralMemory
from tests.cluster.helpers import torch_threads
from tests.serve.helpers import error_of, ok
from tests.serve.test_mcp import call, call_error, mcp_client

CONFIG = {"encoder": "hash", "memory_width": 256, "value_dim": 64}
TEXTS = [f"fact {i}: the {w} river flows past town {i * 7 % 13}" for i, w in
         enumerate(["quiet", "wide", "cold", "brown", "slow"] * 9)]  # 45 texts: more than one chunk


def _create(api, name: str) -> None:
    ok(api.post("/v1/memories", json={"name": name, "config": CONFIG}), 201)


def test_a_batch_through_rest_equals_the_same_batch_in_process(api, fresh_name):
    _create(api, fresh_name)
    result = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"contexts": TEXTS, "domain": "geo"}))

    with torch_threads(ActorSettings().torch_threads):  # bitwise equality needs the actors' threads
        twin = NeuralMemory(MemoryConfig.from_dict(CONFIG))
        expected = twin.observe(TEXTS, domain="geo")
    assert result["weight_hash"] == twin.weight_hash
    assert result["step"] == len(TEXTS) == twin.step
    assert [item["step"] for item in result["items"]] == list(range(1, len(TEXTS) + 1))
    assert np.allclose([item["surprise"] for item in result["items"]], expected["surprises"], atol=1e-6)
    assert result["surprise"] == pytest.approx(np.mean(expected["surprises"]), abs=1e-6)
    # one write, one log entry: the history has every text, in order
    history = ok(api.get(f"/v1/memories/{fresh_name}/history", params={"limit": 100}))["observations"]
    assert [h["text"] for h in history] == TEXTS


def test_a_retried_write_applies_once(api, fresh_name):
    _create(api, fresh_name)
    body = {"contexts": TEXTS[:5], "request_id": "batch-0001"}
    first = ok(api.post(f"/v1/memories/{fresh_name}/observe", json=body))
    again = ok(api.post(f"/v1/memories/{fresh_name}/observe", json=body))
    assert again == {**first, "repeated": True} and first["repeated"] is False and again["step"] == 5
    # the header works the same way, also for single texts
    headers = {"Idempotency-Key": "single-0001"}
    one = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": TEXTS[5]}, headers=headers))
    two = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": TEXTS[5]}, headers=headers))
    assert two == {**one, "repeated": True} and two["step"] == 6
    assert ok(api.get(f"/v1/memories/{fresh_name}/stats"))["total_observations"] == 6
    # a different key is a different write
    third = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={**body, "request_id": "batch-0002"}))
    assert third["step"] == 11
    # a batch of one is a batch: its item comes in `items`, also when resent (a single context
    # resent as a batch of one is the same write)
    alone = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"contexts": [TEXTS[6]]}))
    assert [item["step"] for item in alone["items"]] == [12] and alone["items"][0]["surprise"] == alone["surprise"]
    assert ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"contexts": [TEXTS[5]]}, headers=headers)) \
        == {**one, "repeated": True, "items": [{"surprise": one["surprise"], "step": 6}]}


def test_a_key_reused_for_another_write_is_refused_and_nothing_of_it_applied(api, fresh_name):
    _create(api, fresh_name)
    body = {"contexts": TEXTS[:2], "request_id": "reused-0001"}
    first = ok(api.post(f"/v1/memories/{fresh_name}/observe", json=body))
    for other in ({"contexts": TEXTS[2:5]}, {"context": TEXTS[0]}, {"contexts": TEXTS[:2], "domain": "geo"},
                  {"contexts": TEXTS[:2], "learning_rate": 0.5}, {"contexts": TEXTS[1::-1]}):
        error = error_of(api.post(f"/v1/memories/{fresh_name}/observe",
                                  json={**other, "request_id": "reused-0001"}), 409)
        assert error["code"] == "request_id_reused" and "reused-0001" in error["message"], error
    stats = ok(api.get(f"/v1/memories/{fresh_name}/stats"))
    assert (stats["total_observations"], stats["weight_hash"]) == (2, first["weight_hash"])
    # the write itself, retried exactly, is still answered as the first time, items included
    assert ok(api.post(f"/v1/memories/{fresh_name}/observe", json=body)) == {**first, "repeated": True}
    assert [item["step"] for item in first["items"]] == [1, 2]


def test_a_batch_sent_before_the_one_it_names_waits_and_lands_after_it(api, gateway, fresh_name):
    """Two batches in flight: the second names the first (`after_request_id`) and reaches the
    server first; it is applied second, exactly as one client sending them one by one."""
    import threading
    import time

    import httpx

    _create(api, fresh_name)
    first, second = TEXTS[:20], TEXTS[20:]
    late: dict = {}

    def send_second() -> None:
        with httpx.Client(base_url=gateway.base_url, headers=dict(api.headers), timeout=60) as other:
            late["response"] = other.post(f"/v1/memories/{fresh_name}/observe", json={
                "contexts": second, "request_id": "import-b", "after_request_id": "import-a"})

    sender = threading.Thread(target=send_second)
    sender.start()
    time.sleep(1.0)  # the second batch is waiting in the memory's actor
    assert ok(api.get(f"/v1/memories/{fresh_name}/stats"))["total_observations"] == 0
    a = ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"contexts": first, "request_id": "import-a"}))
    sender.join(60)
    b = ok(late["response"])
    assert (a["step"], b["step"]) == (len(first), len(TEXTS))

    with torch_threads(ActorSettings().torch_threads):
        twin = NeuralMemory(MemoryConfig.from_dict(CONFIG))
        twin.observe(first)
        twin.observe(second)
    assert b["weight_hash"] == twin.weight_hash


@pytest.mark.parametrize("body, headers, words", [
    ({"context": "x", "contexts": ["y"]}, {}, ["exactly one"]),
    ({}, {}, ["exactly one"]),
    ({"contexts": []}, {}, ["contexts"]),
    ({"contexts": ["x"] * (C.MAX_BATCH_ITEMS + 1)}, {}, ["contexts", str(C.MAX_BATCH_ITEMS)]),
    ({"contexts": ["ok", "  "]}, {}, ["contexts.1"]),
    ({"context": "x", "request_id": "bad id!"}, {}, ["request_id"]),
    ({"context": "x", "request_id": "a-1"}, {"Idempotency-Key": "a-2"}, ["differ"]),
    ({"context": "x"}, [("Idempotency-Key", "h-1"), ("Idempotency-Key", "h-2")], ["more than once"]),
    ({"context": "x", "request_id": "a-1", "after_request_id": "a-1"}, {}, ["after_request_id", "itself"]),
    ({"context": "x", "after_request_id": "bad id!"}, {}, ["after_request_id"]),
])
def test_bad_batches_are_refused_and_nothing_is_learned(api, fresh_name, body, headers, words):
    _create(api, fresh_name)
    response = api.post(f"/v1/memories/{fresh_name}/observe", json=body, headers=headers)
    error = error_of(response, response.status_code)
    assert response.status_code in (400, 422) and error["code"] == "invalid_input"
    assert all(w.lower() in error["message"].lower() for w in words), error
    assert ok(api.get(f"/v1/memories/{fresh_name}/stats"))["total_observations"] == 0


def test_mcp_observe_takes_a_batch_and_a_request_id(gateway, fresh_name):
    async def run() -> tuple[dict, dict, str]:
        async with mcp_client(gateway.mcp_url, gateway.key_a) as client:
            await call(client, "create_memory", memory=fresh_name, config=CONFIG)
            first = await call(client, "observe", memory=fresh_name, contexts=TEXTS[:4], request_id="m-1")
            again = await call(client, "observe", memory=fresh_name, contexts=TEXTS[:4], request_id="m-1")
            both = await call_error(client, "observe", memory=fresh_name, context="x", contexts=["y"])
            return first, again, both

    first, again, both = anyio.run(run)
    assert again == {**first, "repeated": True} and first["step"] == 4 and len(first["items"]) == 4
    assert "invalid_input" in both and "exactly one" in both


def test_the_upload_parser_takes_every_option_the_command_does(api):
    """POST /v1/import/parse (the dashboard's Import tab) splits with the import command's code
    and options, and its errors name the parameter to set."""
    def parse(body: bytes, **params) -> dict:
        return ok(api.post("/v1/import/parse", params=params, content=body,
                           headers={"content-type": "application/octet-stream"}))

    rows = b"id,body,topic\n1,the sky is blue,sky\n2,grass is green,plants\n"
    parsed = parse(rows, filename="r.csv", column="body", domain_column="topic")
    assert [(i["text"], i["domain"]) for i in parsed["items"]] == [("the sky is blue", "sky"),
                                                                   ("grass is green", "plants")]
    assert parse(b'{"text": "no extension"}\n', filename="export", format="jsonl")["count"] == 1
    unknown = error_of(api.post("/v1/import/parse", params={"filename": "export"}, content=b"x"), 400)
    assert "`format`" in unknown["message"]
    missing = error_of(api.post("/v1/import/parse", params={"filename": "r.csv"}, content=rows), 400)
    assert "['id', 'body', 'topic']" in missing["message"] and "`column`" in missing["message"]
    blank = error_of(api.post("/v1/import/parse", params={"filename": "a.md", "domain": "  "}, content=b"x"), 422)
    assert "domain" in blank["message"]


def test_the_upload_parser_refuses_a_file_of_too_many_items_without_stalling_others(api):
    """16 MB of one-character lines is 8M items: once a 216 MB answer built in over a minute,
    during which the gateway answered no one. Now 413 naming the command line, and the split
    runs off the event loop."""
    import threading
    import time

    from serve.imports import MAX_PARSE_ITEMS

    answers: list = []
    upload = threading.Thread(target=lambda: answers.append(api.post(
        "/v1/import/parse", params={"filename": "a.txt", "split": "line"}, content=b"x\n" * 8_000_000,
        headers={"content-type": "application/octet-stream"}, timeout=300)))
    upload.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        ok(api.get("/healthz"))
        waited = time.monotonic() - started  # reported, not asserted: a timing on a shared machine
    finally:
        upload.join(300)
    refused = error_of(answers[0], 413)
    assert f"more than {MAX_PARSE_ITEMS:,} items" in refused["message"] and "neural-memory import" in refused["message"]
    print(f"/healthz during the upload: {waited:.2f} s")
    exactly = b"x\n" * MAX_PARSE_ITEMS
    assert ok(api.post("/v1/import/parse", params={"filename": "a.txt", "split": "line"}, content=exactly,
                       headers={"content-type": "application/octet-stream"}))["count"] == MAX_PARSE_ITEMS
