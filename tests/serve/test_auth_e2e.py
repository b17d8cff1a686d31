"""Auth over real HTTP: no endpoint answers without a valid key; a key stays in its tenant."""

from __future__ import annotations

import pytest

from tests.serve.helpers import error_of, ok

# Open by design: liveness, the API's own documentation, and the dashboard's static files.
PUBLIC = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/"}


def _protected_routes(anon) -> list[tuple[str, str]]:
    paths = ok(anon.get("/openapi.json"))["paths"]
    routes = [(method.upper(), path.replace("{name}", "anything"))
              for path, item in paths.items() if path not in PUBLIC for method in item]
    return routes + [("GET", "/metrics"), ("POST", "/mcp"), ("GET", "/mcp")]


def test_openapi_lists_every_contract_route(anon):
    routes = set(_protected_routes(anon))
    assert len(routes) >= 18  # 16 REST (14 contract + history + lineage) + metrics + mcp


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-valid-key"}, {"Authorization": "Basic dXNlcjpwYXNz"},
     {"Authorization": "Bearer"}],
    ids=["no-key", "unknown-key", "wrong-scheme", "empty-key"],
)
def test_every_endpoint_refuses_without_a_valid_key(anon, headers):
    for method, path in _protected_routes(anon):
        response = anon.request(method, path, headers=headers, json={})
        error = error_of(response, 401)
        assert error["code"] == "auth_error", (method, path)
        assert response.headers.get("www-authenticate") == "Bearer", (method, path)


def test_public_endpoints_need_no_key(anon):
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/openapi.json").status_code == 200
    assert anon.get("/").status_code == 200


def test_tenant_b_cannot_reach_tenant_a_memories(api, api_b, fresh_name):
    ok(api.post("/v1/memories", json={"name": fresh_name}), 201)
    ok(api.post(f"/v1/memories/{fresh_name}/observe", json={"context": "alice's secret"}))
    ok(api.post(f"/v1/memories/{fresh_name}/checkpoints", json={"tag": "v1"}))
    base = f"/v1/memories/{fresh_name}"
    attempts = [
        ("GET", f"{base}/stats", None), ("POST", f"{base}/observe", {"context": "x"}),
        ("POST", f"{base}/infer", {"prompt": "secret?"}), ("POST", f"{base}/surprise", {"input": "x"}),
        ("POST", f"{base}/consolidate", {}), ("GET", f"{base}/checkpoints", None),
        ("POST", f"{base}/checkpoints", {"tag": "v2"}), ("POST", f"{base}/restore", {"tag": "v1"}),
        ("POST", f"{base}/fork", {"new_name": f"{fresh_name}-stolen"}),
        ("POST", f"{base}/attention_map", {"query": "x"}), ("GET", f"{base}/explain", None),
        ("GET", f"{base}/history", None), ("DELETE", base, None),
    ]
    for method, path, body in attempts:
        response = api_b.request(method, path, json=body)
        assert error_of(response, 404)["code"] in ("memory_not_found", "not_found"), (method, path)
    assert fresh_name not in {m["name"] for m in ok(api_b.get("/v1/memories"))["memories"]}
    assert fresh_name not in {m["name"] for m in ok(api_b.get("/v1/lineage"))["memories"]}

    # The same short name in tenant B is a different memory.
    ok(api_b.post("/v1/memories", json={"name": fresh_name}), 201)
    assert ok(api_b.get(f"{base}/stats"))["total_observations"] == 0
    assert ok(api.get(f"{base}/stats"))["total_observations"] == 1
    assert api_b.delete(base).status_code == 204
    assert ok(api.get(f"{base}/stats"))["total_observations"] == 1  # A's memory untouched
    assert api.delete(base).status_code == 204


def test_two_different_keys_in_one_request_are_refused_on_every_route(anon, gateway):
    """The first of two Authorization headers used to win; a request naming two keys is
    refused as ambiguous (REST and MCP alike), and one key given twice is fine."""
    two = [("Authorization", f"Bearer {gateway.key_a}"), ("Authorization", f"Bearer {gateway.key_b}")]
    for method, path in [("GET", "/v1/memories"), ("POST", "/mcp")]:
        error = error_of(anon.request(method, path, headers=two, json={}), 400)
        assert error["code"] == "invalid_input" and "Authorization header is given more than once" in error["message"]
    same = [("Authorization", f"Bearer {gateway.key_a}")] * 2
    assert anon.get("/v1/memories", headers=same).status_code == 200
