"""The bad-input table: each a clear 4xx in the error envelope, and the server keeps serving."""

from __future__ import annotations

import gzip

import pytest

from tests.serve.helpers import error_of, ok

TEN_MB = "x" * (10 * 1024 * 1024)
DEEP_JSON = ('{"name": "deep", "config": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()


@pytest.fixture(scope="module")
def target(gateway) -> str:
    """One memory of tenant A (with a checkpoint) that the bad requests aim at."""
    import httpx

    name = "bad-input-target"
    with httpx.Client(base_url=gateway.base_url, headers=gateway.headers(), timeout=120) as c:
        if c.get(f"/v1/memories/{name}/stats").status_code == 404:
            ok(c.post("/v1/memories", json={"name": name, "config": {"encoder": "hash"}}), 201)
            ok(c.post(f"/v1/memories/{name}/checkpoints", json={"tag": "v1"}))
    return name


CASES = [
    # id, method, path ({m} = target memory), kwargs for httpx, status, code, words in message
    ("empty-text", "POST", "/v1/memories/{m}/observe", {"json": {"context": ""}},
     422, "invalid_input", ["context"]),
    ("blank-text", "POST", "/v1/memories/{m}/observe", {"json": {"context": "  \n "}},
     422, "invalid_input", ["context", "non-whitespace"]),
    ("zero-width-only-text", "POST", "/v1/memories/{m}/observe", {"json": {"context": "\u200b\u200d\ufeff \u2060"}},
     422, "invalid_input", ["context", "visible"]),
    ("zero-width-only-batch-item", "POST", "/v1/memories/{m}/observe",
     {"json": {"contexts": ["fine", "\u200b"]}}, 422, "invalid_input", ["visible"]),
    ("10MB-text", "POST", "/v1/memories/{m}/observe", {"json": {"context": TEN_MB}},
     413, "payload_too_large", ["limit"]),
    ("invalid-json", "POST", "/v1/memories/{m}/observe",
     {"content": b'{"context": "unterminated', "headers": {"content-type": "application/json"}},
     400, "invalid_json", ["JSON"]),
    ("nan-learning-rate", "POST", "/v1/memories/{m}/observe",
     {"content": b'{"context": "x", "learning_rate": NaN}',
      "headers": {"content-type": "application/json"}},
     422, "invalid_input", ["learning_rate", "finite"]),
    ("inf-learning-rate", "POST", "/v1/memories/{m}/observe",
     {"content": b'{"context": "x", "learning_rate": Infinity}',
      "headers": {"content-type": "application/json"}},
     422, "invalid_input", ["learning_rate"]),
    ("deeply-nested-json", "POST", "/v1/memories",
     {"content": DEEP_JSON, "headers": {"content-type": "application/json"}},
     400, "invalid_json", ["JSON"]),
    ("learning-rate-too-big", "POST", "/v1/memories/{m}/observe",
     {"json": {"context": "x", "learning_rate": 5}}, 422, "invalid_input", ["learning_rate"]),
    ("name-dotdot", "POST", "/v1/memories", {"json": {"name": "../x"}},
     422, "invalid_input", ["name"]),
    ("name-300-chars", "POST", "/v1/memories", {"json": {"name": "a" * 300}},
     422, "invalid_input", ["name"]),
    ("name-in-path", "GET", "/v1/memories/UPPER/stats", {}, 422, "invalid_input", ["name"]),
    ("fork-name-dotdot", "POST", "/v1/memories/{m}/fork", {"json": {"new_name": "../x"}},
     422, "invalid_input", ["new_name"]),
    ("unknown-memory", "POST", "/v1/memories/no-such-memory/observe", {"json": {"context": "x"}},
     404, "memory_not_found", ["no-such-memory"]),
    ("unknown-tag", "POST", "/v1/memories/{m}/restore", {"json": {"tag": "no-such-tag"}},
     404, "checkpoint_not_found", ["no-such-tag"]),
    ("fork-unknown-tag", "POST", "/v1/memories/{m}/fork",
     {"json": {"new_name": "never-created", "source_tag": "no-such-tag"}},
     404, "checkpoint_not_found", ["no-such-tag"]),
    ("top-k-zero", "POST", "/v1/memories/{m}/infer", {"json": {"prompt": "x", "top_k": 0}},
     422, "invalid_input", ["top_k"]),
    # a JSON true or "3" is no number: taken as 1 or 3 it would hide the caller's bug
    ("learning-rate-true", "POST", "/v1/memories/{m}/observe",
     {"json": {"context": "x", "learning_rate": True}}, 422, "invalid_input", ["learning_rate"]),
    ("top-k-string", "POST", "/v1/memories/{m}/infer", {"json": {"prompt": "x", "top_k": "3"}},
     422, "invalid_input", ["top_k"]),
    ("domain-c1-control", "POST", "/v1/memories/{m}/observe",
     {"json": {"context": "x", "domain": "a\x85b"}}, 422, "invalid_input", ["domain"]),
    ("lone-surrogate", "POST", "/v1/memories/{m}/observe",
     {"content": b'{"context": "a \\ud800 b"}', "headers": {"content-type": "application/json"}},
     422, "invalid_input", ["context"]),
    ("explain-top-k-zero", "GET", "/v1/memories/{m}/explain?top_k=0", {},
     422, "invalid_input", ["top_k"]),
    ("typo-field", "POST", "/v1/memories/{m}/observe", {"json": {"contxt": "x"}},
     422, "invalid_input", ["context", "contxt"]),
    ("wrong-type", "POST", "/v1/memories/{m}/observe", {"json": {"context": 12}},
     422, "invalid_input", ["context"]),
    ("body-not-object", "POST", "/v1/memories/{m}/observe", {"json": ["x"]},
     422, "invalid_input", []),
    ("blank-domain", "POST", "/v1/memories/{m}/observe", {"json": {"context": "x", "domain": "   "}},
     422, "invalid_input", ["domain", "visible"]),
    ("body-not-json", "POST", "/v1/memories/{m}/observe",
     {"content": '{"context": "x"}', "headers": {"content-type": "text/plain"}},
     422, "invalid_input", ["text/plain", "Content-Type: application/json"]),
    ("bad-config", "POST", "/v1/memories", {"json": {"name": "bad-config", "config": {"encoder": "nope"}}},
     400, "invalid_input", ["encoder"]),
    ("duplicate-tag", "POST", "/v1/memories/{m}/checkpoints", {"json": {"tag": "v1"}},
     409, "checkpoint_conflict", ["v1"]),
    ("duplicate-memory", "POST", "/v1/memories", {"json": {"name": "{m}"}},
     409, "memory_exists", []),
    ("negative-history", "GET", "/v1/memories/{m}/history?limit=-1", {},
     422, "invalid_input", ["limit"]),
    ("unknown-route", "GET", "/v1/nothing-here", {}, 404, "not_found", ["/v1/nothing-here"]),
    ("wrong-method", "PUT", "/v1/memories/{m}/observe", {"json": {}}, 405, "method_not_allowed", []),
    # read as JSON, gzip bytes were "not valid JSON", which sent the caller looking at the JSON
    ("gzip-body", "POST", "/v1/memories/{m}/observe",
     {"content": gzip.compress(b'{"context": "x"}'),
      "headers": {"content-type": "application/json", "content-encoding": "gzip"}},
     415, "unsupported_media_type", ["gzip", "without a content-encoding"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx(api, target, case):
    _, method, path, kwargs, status, code, words = case
    if "json" in kwargs and kwargs["json"] == {"name": "{m}"}:
        kwargs = {"json": {"name": target}}
    error = error_of(api.request(method, path.format(m=target), **kwargs), status)
    assert error["code"] == code
    for word in words:
        assert word.lower() in error["message"].lower(), error


def test_server_keeps_serving_after_the_table(api, target):
    for case in CASES:  # again, back to back, then a normal call must still work
        _, method, path, kwargs, *_ = case
        assert api.request(method, path.format(m=target), **kwargs).status_code < 500
    assert ok(api.get("/healthz"))["status"] == "ok"
    learned = ok(api.post(f"/v1/memories/{target}/observe", json={"context": "still learning"}))
    assert learned["step"] >= 1
    assert error_of(api.get("/v1/memories/never-created/stats"), 404)


UNKNOWN_MEMORY_ROUTES = [
    ("GET", "/stats", {}), ("POST", "/observe", {"json": {"context": "x"}}),
    ("POST", "/infer", {"json": {"prompt": "x"}}), ("GET", "/history", {}),
    ("GET", "/checkpoints", {}), ("POST", "/checkpoints", {"json": {"tag": "v1"}}),
    ("POST", "/fork", {"json": {"new_name": "never-forked"}}), ("DELETE", "", {}),
]


@pytest.mark.parametrize("method,suffix,kwargs", UNKNOWN_MEMORY_ROUTES,
                         ids=[f"{m} {s or '/'}" for m, s, _ in UNKNOWN_MEMORY_ROUTES])
def test_an_unknown_memory_is_named_as_the_caller_named_it(api, method, suffix, kwargs):
    """Whichever layer finds it missing (registry, WAL, history, router), the message names the
    memory by the caller's own name, never by the server's tenant-qualified id."""
    error = error_of(api.request(method, f"/v1/memories/no-such-memory{suffix}", **kwargs), 404)
    assert error["code"] == "memory_not_found"
    assert error["message"] == "memory no-such-memory not found", error


def test_checkpoint_errors_name_the_memory_as_the_caller_named_it(api, target):
    """Not found and already exists, from the registry or the memory's actor: the short name."""
    missing = error_of(api.post(f"/v1/memories/{target}/restore", json={"tag": "never-saved"}), 404)
    assert missing["message"] == f"no checkpoint tagged 'never-saved' for memory {target}", missing
    taken = error_of(api.post(f"/v1/memories/{target}/checkpoints", json={"tag": "v1"}), 409)
    assert taken["message"] == f"checkpoint tag 'v1' already exists for memory {target}", taken
    exists = error_of(api.post("/v1/memories", json={"name": target}), 409)
    assert exists["message"].startswith(f"memory {target} already exists"), exists
