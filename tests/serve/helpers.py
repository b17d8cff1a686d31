"""Assertions shared by the serve tests."""

from __future__ import annotations

import httpx


def ok(response: httpx.Response, status: int = 200) -> dict:
    """The JSON body, after checking the status (the body is in the failure message)."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json() if response.content else {}


def error_of(response: httpx.Response, status: int) -> dict:
    """The error object of an envelope, after checking status and shape (for /mcp, the one a
    JSON-RPC error carries in its data, with the same code and message in its own message)."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body = response.json()
    if response.request.url.path.rstrip("/") == "/mcp":
        assert set(body) == {"jsonrpc", "id", "error"} and body["id"] is None, body
        data = body["error"]["data"]
        assert body["error"]["message"] == f"{data['code']}: {data['message']}", body
        body = {"error": data}
    assert set(body) == {"error"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    return body["error"]
