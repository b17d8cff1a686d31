"""MCP over streamable HTTP with the official `mcp` client, against the running Serve app.

Lists the 15 tools, calls every one of them (scenarios 6.1-6.3 through MCP), checks tool
errors and MCP auth, and runs the stdio proxy (`neural-memory mcp`) as a desktop client would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from serve.mcp_tools import TOOL_NAMES

TIMEOUT = 180.0


@asynccontextmanager
async def mcp_client(url: str, key: str | None, mode: str = "auto") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=TIMEOUT) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


async def call(client: Client, tool: str, **args: Any) -> dict:
    """Structured result of a successful tool call."""
    result = await client.call_tool(tool, args)
    text = result.content[0].text if result.content else ""
    assert not result.is_error, f"{tool} failed: {text}"
    return result.structured_content


async def call_error(client: Client, tool: str, **args: Any) -> str:
    """Text of a tool call that must fail."""
    result = await client.call_tool(tool, args)
    assert result.is_error, f"{tool}({args}) unexpectedly succeeded: {result.structured_content}"
    return result.content[0].text


def name() -> str:
    return f"mcp-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28 and handshake-era protocols
def test_lists_the_15_tools_with_described_arguments(gateway, mode):
    async def run() -> list:
        async with mcp_client(gateway.mcp_url, gateway.key_a, mode) as client:
            return (await client.list_tools()).tools

    tools = {t.name: t for t in anyio.run(run)}
    assert set(tools) == set(TOOL_NAMES) and len(tools) == 15
    for tool in tools.values():
        assert tool.description and tool.output_schema, tool.name
        assert tool.input_schema.get("additionalProperties") is False, tool.name
        props = tool.input_schema.get("properties", {})
        if tool.name != "list_memories":
            assert "memory" in props, tool.name
        for arg, schema in props.items():
            assert schema.get("description") or any(
                alt.get("description") for alt in schema.get("anyOf", [])
            ), f"{tool.name}.{arg} has no description"
    observe = tools["observe"].input_schema
    assert {"context", "contexts", "request_id"} <= set(observe["properties"])  # one text or a batch
    assert not observe.get("required")
    assert set(tools["fork"].input_schema["properties"]) >= {"source_tag", "new_tag", "memory"}


def test_every_tool_through_scenarios(gateway):
    memory, branch = name(), name()

    async def run() -> None:
        async with mcp_client(gateway.mcp_url, gateway.key_a) as c:
            created = await call(c, "create_memory", memory=memory)
            assert created["name"] == memory
            novel = await call(c, "surprise", input="Explain grokking", memory=memory)
            learned = await call(c, "observe", memory=memory, domain="ml", context=(
                "Grokking is when a model suddenly generalizes after extensive overfitting."))
            assert learned["surprise"] > 0.5 and learned["step"] == 1
            known = await call(c, "surprise", input="Explain grokking", memory=memory)
            assert known["score"] < novel["score"]
            answer = await call(c, "infer", prompt="What is grokking in ML?", memory=memory)
            assert "grokking" in answer["response"].lower()
            attention = await call(c, "attention_map", query="grokking", memory=memory)
            assert attention["attention_weights"]
            assert (await call(c, "explain", top_k=1, memory=memory))["patterns"]
            assert (await call(c, "consolidate", memory=memory))["stability_score"] >= 0

            saved = await call(c, "checkpoint", tag="stable-v1", description="d", memory=memory)
            await call(c, "observe", context="An experiment that fails", memory=memory)
            tags = await call(c, "list_checkpoints", memory=memory)
            assert "stable-v1" in {t["tag"] for t in tags["checkpoints"]}
            restored = await call(c, "restore", tag="stable-v1", memory=memory)
            assert restored["weight_hash"] == saved["weight_hash"]
            assert restored["learning_since_checkpoint"] == 1
            forgot = await call(c, "forget", text="An experiment that fails", memory=memory)
            assert (forgot["status"], forgot["exact"], forgot["forgotten"]) == ("done", True, 1)
            # the audit names the key that asked (its fingerprint), as for a forget over REST
            audit = httpx.get(f"{gateway.base_url}/v1/audit", headers=gateway.headers(), timeout=TIMEOUT).json()
            (record,) = [r for r in audit["records"] if r["job_id"] == forgot["job_id"]]
            assert record["key"] == "key:" + hashlib.sha256(gateway.key_a.encode()).hexdigest()[:12]
            forked = await call(c, "fork", source_tag="stable-v1", new_tag=branch, memory=memory)
            assert forked["forked"] and forked["new_hash"] == saved["weight_hash"]
            stats = await call(c, "stats", memory=branch)
            assert stats["weight_hash"] == saved["weight_hash"]

            listed = {m["name"]: m for m in (await call(c, "list_memories"))["memories"]}
            assert listed[branch]["parent"] == memory
            assert (await call(c, "delete_memory", memory=branch))["deleted"] is True
            await call(c, "delete_memory", memory=memory)
            listed = {m["name"] for m in (await call(c, "list_memories"))["memories"]}
            assert not {memory, branch} & listed

    anyio.run(run)


def test_default_memory_is_created_on_first_use(gateway):
    """Also by concurrent first calls: those that found another call creating it failed with
    `busy` (3 of 6), though the README says it is created on first use."""
    async def run() -> None:
        async with mcp_client(gateway.mcp_url, gateway.key_b) as c:
            await c.call_tool("delete_memory", {"memory": "default"})  # absent or not: first use next
            texts = [f"The default memory learns fact {i}." for i in range(4)]
            firsts = await asyncio.gather(*(call(c, "observe", context=text) for text in texts))
            stats = await call(c, "stats")
            assert stats["total_observations"] == 4 and sorted(f["step"] for f in firsts) == [1, 2, 3, 4]
            assert stats["weight_hash"] == max(firsts, key=lambda f: f["step"])["weight_hash"]
            assert "default" in {m["name"] for m in (await call(c, "list_memories"))["memories"]}

    anyio.run(run)


def test_tool_errors_say_what_to_fix(gateway):
    async def run() -> None:
        async with mcp_client(gateway.mcp_url, gateway.key_a) as c:
            missing = name()
            assert "memory_not_found" in await call_error(c, "stats", memory=missing)
            assert "memory" in await call_error(c, "observe", context="x", memory="../x")
            assert "memory" in await call_error(c, "observe", context="x", memory="a" * 300)
            assert "context" in await call_error(c, "observe", context="")
            assert "top_k" in await call_error(c, "infer", prompt="x", top_k=0)
            assert "learning_rate" in await call_error(c, "observe", context="x", learning_rate=-1)
            memory = name()
            await call(c, "create_memory", memory=memory)
            default_before = (await call(c, "stats"))["total_observations"]
            # a misspelt argument is refused, not dropped (the write would land in the default memory)
            typo = await call_error(c, "observe", context="x", memroy=memory)
            assert "invalid_input" in typo and "'memroy'" in typo and "memory" in typo
            assert (await call(c, "stats"))["total_observations"] == default_before
            assert (await call(c, "stats", memory=memory))["total_observations"] == 0
            assert "memory_exists" in await call_error(c, "create_memory", memory=memory)
            bad_selector = await call_error(c, "forget", text="a", domain="b", memory=memory)
            assert "invalid_input: give exactly one selector" in bad_selector and "pydantic" not in bad_selector
            status_and_selector = await call_error(c, "forget", job_id="0" * 32, text="a", memory=memory)
            assert "invalid_input" in status_and_selector and "text" in status_and_selector
            assert "checkpoint_not_found" in await call_error(c, "restore", tag="nope", memory=memory)
            assert "Unknown tool" in await call_error(c, "store", content="x")
            await call(c, "delete_memory", memory=memory)

    anyio.run(run)


def _rpc(gateway, key: str | None, payload: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(gateway.mcp_url, content=payload, headers=headers, timeout=TIMEOUT)


def test_nan_learning_rate_in_raw_json_rpc_is_a_tool_error(gateway):
    payload = ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "observe",'
               ' "arguments": {"context": "x", "learning_rate": NaN}}}')
    response = _rpc(gateway, gateway.key_a, payload)
    assert response.status_code in (200, 400), response.text
    body = json.loads(response.text)
    if "error" in body:  # refused by the JSON-RPC layer (NaN is not JSON)
        assert body["error"]["message"]
    else:
        assert body["result"]["isError"] is True
        assert "learning_rate" in body["result"]["content"][0]["text"]


@pytest.mark.parametrize("bad_id", ['{"a": 1}', "[1]", "null", "true", "1.5"])
def test_a_request_whose_id_is_no_string_or_integer_is_answered_invalid_request(gateway, bad_id):
    """The SDK took such a request for a notification and answered 202 with nothing: the client
    waited for a reply that never came. A request with a good id after it is answered as ever."""
    response = _rpc(gateway, gateway.key_a, '{"jsonrpc": "2.0", "id": %s, "method": "tools/list"}' % bad_id)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["id"] is None and body["error"]["code"] == -32600 and "`id`" in body["error"]["message"], body
    listed = _rpc(gateway, gateway.key_a, '{"jsonrpc": "2.0", "id": "req-7", "method": "tools/list"}')
    assert listed.status_code == 200 and listed.json()["id"] == "req-7", listed.text
    assert len(listed.json()["result"]["tools"]) == len(TOOL_NAMES)


def test_a_message_not_sent_as_json_is_told_so_in_a_json_rpc_error(gateway):
    response = httpx.post(gateway.mcp_url, content='{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}',
                          headers={"Authorization": f"Bearer {gateway.key_a}", "Content-Type": "text/plain",
                                   "Accept": "application/json, text/event-stream"}, timeout=TIMEOUT)
    assert response.status_code == 415, response.text
    assert "Content-Type: application/json" in response.json()["error"]["message"]


def test_mcp_requires_a_valid_key_and_stays_in_its_tenant(gateway):
    listing = '{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'
    for key in (None, "not-a-real-key-123"):
        response = _rpc(gateway, key, listing)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["data"]["code"] == "auth_error"  # a JSON-RPC error
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(gateway.mcp_url, timeout=TIMEOUT).status_code == 401  # the key first, then the method

    async def refused(key: str | None, tool: str, **args: Any) -> str:
        """What the official client tells its user when the gateway refuses the HTTP request."""
        with pytest.raises(Exception) as caught:
            async with mcp_client(gateway.mcp_url, key) as client:
                await client.call_tool(tool, args)
        error = caught.value
        while isinstance(error, BaseExceptionGroup):  # raised inside the client's task group
            error = error.exceptions[0]
        return str(error)

    assert "auth_error: unknown API key" in anyio.run(refused, "not-a-real-key-123", "list_memories")
    assert "auth_error: missing API key" in anyio.run(refused, None, "list_memories")
    too_big = anyio.run(lambda: refused(gateway.key_a, "observe", contexts=["x" * 30_000] * 70))
    assert "payload_too_large: request body is over the" in too_big

    private = name()

    async def run() -> None:
        async with mcp_client(gateway.mcp_url, gateway.key_a) as a:
            await call(a, "create_memory", memory=private)
        async with mcp_client(gateway.mcp_url, gateway.key_b) as b:
            assert "memory_not_found" in await call_error(b, "stats", memory=private)
            assert "memory_not_found" in await call_error(b, "observe", context="x", memory=private)
            assert private not in {m["name"] for m in (await call(b, "list_memories"))["memories"]}
        async with mcp_client(gateway.mcp_url, gateway.key_a) as a:
            await call(a, "delete_memory", memory=private)

    anyio.run(run)


def test_mcp_is_post_only_so_no_idle_stream_holds_a_request_slot(gateway):
    """Stateless and JSON: a GET's event stream could never carry a message, yet each one held
    a gateway request slot until its client left (about 200 stalled every tenant). GET and
    DELETE get 405 naming POST, at once, in the error shape of every other refusal."""
    headers = {"Authorization": f"Bearer {gateway.key_a}", "Accept": "text/event-stream"}
    for method in ("GET", "DELETE", "PUT", "PATCH"):
        assert httpx.request(method, gateway.mcp_url, timeout=10).status_code == 401  # the key first
        response = httpx.request(method, gateway.mcp_url, headers=headers, timeout=10)
        assert response.status_code == 405 and response.headers["allow"] == "POST", response.text
        assert response.json()["error"]["message"], response.text


def test_the_mcp_server_leaves_the_root_logger_as_it_was():
    """The SDK gives the root logger a `rich` handler: every logged traceback (an unexpected
    error's) was rendered for about a second on the gateway's event loop."""
    import logging

    from serve.mcp_server import new_mcp_server

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    new_mcp_server()
    assert (root.handlers, root.level) == (handlers, level)


def test_stdio_proxy_serves_the_same_tools(gateway):
    """`neural-memory mcp` as Claude Desktop would start it: stdio in, gateway REST out."""
    cli = Path(sys.executable).with_name("neural-memory")
    params = StdioServerParameters(
        command=str(cli),
        args=["mcp", "--url", gateway.base_url, "--api-key", gateway.key_a],
    )
    memory = name()

    async def run() -> None:
        async with Client(params, read_timeout_seconds=TIMEOUT) as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            assert tools == set(TOOL_NAMES)
            await call(c, "create_memory", memory=memory, config={"encoder": "hash"})
            learned = await call(c, "observe", context="Proxy learning works", memory=memory)
            assert learned["step"] == 1
            assert (await call(c, "stats", memory=memory))["total_observations"] == 1
            assert "checkpoint_not_found" in await call_error(c, "restore", tag="x", memory=memory)
            assert "memory" in await call_error(c, "stats", memory="../x")
            too_big = await call_error(c, "observe", contexts=["x" * 30_000] * 70, memory=memory)
            assert "payload_too_large: request body is over the" in too_big, too_big  # as over HTTP
            await call(c, "delete_memory", memory=memory)

    anyio.run(run)


def test_stdio_proxy_names_the_gateway_it_cannot_reach():
    """The proxy runs on its user's machine: a tool call whose gateway is down says which URL
    it tried (the configured one), not only that some backend is unavailable."""
    from serve.ports import free_port

    url = f"http://127.0.0.1:{free_port()}"
    cli = Path(sys.executable).with_name("neural-memory")
    params = StdioServerParameters(command=str(cli), args=["mcp", "--url", url, "--api-key", "k"])

    async def run() -> str:
        async with Client(params, read_timeout_seconds=TIMEOUT) as c:
            return await call_error(c, "stats", memory="anything")

    message = anyio.run(run)
    assert f"unavailable: cannot reach the gateway at {url}" in message and "request id None" not in message, message


@pytest.mark.parametrize("args, words", [
    (["--url", "http://127.0.0.1:9/mcp"], "give the server's base URL"),
    (["--url", "http://127.0.0.1:9", "--memory", "Bad Name"], "--memory"),
    (["--url", "http://127.0.0.1:9/MCP"], "give the server's base URL"),
])
def test_stdio_proxy_refuses_bad_arguments_at_start_in_one_line(args, words):
    """A bad --url ended in a traceback in the desktop client's log; a bad --memory was taken,
    and every tool call then failed."""
    import subprocess

    cli = Path(sys.executable).with_name("neural-memory")
    run = subprocess.run([str(cli), "mcp", *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode == 2 and words in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.parametrize("key", ["wrong-key-00000000", ""])
def test_stdio_proxy_refused_by_the_gateway_says_so_at_start(gateway, key):
    """It printed "not usable yet: unknown API key" and went on, every tool call then failing."""
    import subprocess

    cli = Path(sys.executable).with_name("neural-memory")
    run = subprocess.run([str(cli), "mcp", "--url", gateway.base_url, "--api-key", key], capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "NMEM_API_KEY": ""})
    assert run.returncode == 2 and "API key" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_a_keyless_client_is_told_how_to_give_a_key(gateway):
    from neural_memory import Client

    with Client(gateway.base_url, api_key="") as keyless, pytest.raises(Exception, match="api_key=") as refused:
        keyless.list_memories()
    assert "NMEM_API_KEY" in str(refused.value) and type(refused.value).__name__ == "AuthError"


@pytest.mark.parametrize("tool, args", [
    ("list_memories", {"limit": True}), ("list_memories", {"limit": "5"}), ("list_memories", {"limit": 5.0}),
    ("forget", {"text": "x", "dry_run": "yes"}), ("forget", {"text": "x", "forks": "true"}),
    ("forget", {"text": "x", "dry_run": True, "wait_seconds": "5"}),
])
def test_numbers_and_flags_are_not_guessed_from_other_types(gateway, tool, args):
    """`limit: true` is not a page of one, nor `dry_run: "yes"` a yes: refused, as REST does
    and as the other tools' numbers are."""
    async def run() -> str:
        async with mcp_client(gateway.mcp_url, gateway.key_a) as client:
            return await call_error(client, tool, **args)

    assert "invalid_input" in anyio.run(run)
    if tool == "forget" and "wait_seconds" not in args:
        response = httpx.post(f"{gateway.base_url}/v1/memories/default/forget", json=args,
                              headers=gateway.headers(), timeout=TIMEOUT)
        assert response.status_code == 422, response.text


def test_stdio_proxy_uses_the_gateways_default_memory(gateway):
    """A desktop agent on the stdio proxy and an HTTP agent on /mcp share the default memory:
    the proxy asks the gateway which it is (its NMEM_DEFAULT_MEMORY, not the proxy's env)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from serve.ports import free_port
    from serve.stdio_proxy import FALLBACK_DEFAULT_MEMORY, gateway_default_memory

    assert httpx.get(f"{gateway.base_url}/healthz").json()["default_memory"] == "default"  # the fixture's

    class Gateway(BaseHTTPRequestHandler):  # one whose operator set NMEM_DEFAULT_MEMORY=team-notes
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = json.dumps({"status": "ok", "checks": {}, "default_memory": "team-notes"}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert anyio.run(gateway_default_memory, f"http://127.0.0.1:{server.server_address[1]}") == "team-notes"
    finally:
        server.shutdown()
        server.server_close()
    assert anyio.run(gateway_default_memory, f"http://127.0.0.1:{free_port()}") == FALLBACK_DEFAULT_MEMORY
