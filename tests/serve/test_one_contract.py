"""One contract: the same value gets the same verdict and the same error code from REST, MCP and
the Python API (`MemoryCluster`, the control plane services build on).

Every rule lives in `contract`; this sends one table of good and bad values through all three
entry points of the running stack and compares what comes back. A layer that restated a limit
and drifted (the text limit, `temperature: 0`, tags with '@') fails here.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

import contract as C
from errors import NeuralMemoryError
from serve.error_map import problem_for
from tests.serve.test_mcp import mcp_client

HASH = {"encoder": "hash"}


@dataclass(frozen=True)
class Case:
    field: str
    value: Any
    ok: bool

    @property
    def id(self) -> str:
        shown = repr(self.value)
        return f"{self.field}={shown if len(shown) < 24 else shown[:20] + '...'}-{'ok' if self.ok else 'bad'}"


CASES = [
    Case("name", "notes.v1_b-2", True), Case("name", "UPPER", False), Case("name", "-lead", False),
    Case("name", "n" * 63, True), Case("name", "n" * 64, False),
    Case("tag", "v1.0", True), Case("tag", "t" * 64, True), Case("tag", "t" * 65, False),
    Case("tag", "v1@x", False), Case("tag", "v1:x", False), Case("tag", "auto@000000000001", False),
    Case("text", "x", True), Case("text", "x" * C.MAX_TEXT_CHARS, True),
    Case("text", "x" * (C.MAX_TEXT_CHARS + 1), False), Case("text", "   ", False),
    Case("text", "a\x00b", False),
    Case("domain", "python", True), Case("domain", "d" * C.MAX_DOMAIN_CHARS, True),
    Case("domain", "d" * (C.MAX_DOMAIN_CHARS + 1), False), Case("domain", "a\nb", False),
    Case("learning_rate", 0.5, True), Case("learning_rate", C.MAX_LEARNING_RATE, True),
    Case("learning_rate", 0, False), Case("learning_rate", 2.5, False),
    Case("top_k", C.MIN_TOP_K, True), Case("top_k", C.MAX_TOP_K, True), Case("top_k", 0, False),
    Case("top_k", C.MAX_TOP_K + 1, False),
    Case("temperature", 0, True), Case("temperature", C.MAX_TEMPERATURE, True),
    Case("temperature", -0.1, False), Case("temperature", C.MAX_TEMPERATURE + 0.5, False),
    Case("max_tokens", 1, True), Case("max_tokens", C.MAX_TOKENS, True), Case("max_tokens", 0, False),
    Case("max_tokens", C.MAX_TOKENS + 1, False),
]

OBSERVE_FIELDS = {"text", "domain", "learning_rate"}
INFER_FIELDS = {"top_k", "temperature", "max_tokens"}


def _code_of_exception(exc: BaseException) -> str:
    return problem_for(exc).code


# ---- the three entry points: each returns None (accepted) or the error code ------------------

def via_rest(gateway, memory: str, case: Case) -> str | None:
    with httpx.Client(base_url=gateway.base_url, headers=gateway.headers(), timeout=120) as api:
        if case.field == "name":
            response = api.post("/v1/memories", json={"name": case.value, "config": HASH})
            if response.status_code == 201:
                api.delete(f"/v1/memories/{case.value}")
        elif case.field == "tag":
            response = api.post(f"/v1/memories/{memory}/checkpoints", json={"tag": case.value})
        elif case.field in OBSERVE_FIELDS:
            body = {"context": case.value} if case.field == "text" else {"context": "x", case.field: case.value}
            response = api.post(f"/v1/memories/{memory}/observe", json=body)
        else:
            response = api.post(f"/v1/memories/{memory}/infer", json={"prompt": "x", case.field: case.value})
    if response.status_code < 300:
        return None
    return response.json()["error"]["code"]


async def via_mcp(gateway, memory: str, case: Case) -> str | None:
    if case.field == "name":
        tool, args = "create_memory", {"memory": case.value, "config": HASH}
    elif case.field == "tag":
        tool, args = "checkpoint", {"memory": memory, "tag": case.value}
    elif case.field in OBSERVE_FIELDS:
        tool = "observe"
        args = {"memory": memory, "context": case.value} if case.field == "text" else \
            {"memory": memory, "context": "x", case.field: case.value}
    else:
        tool, args = "infer", {"memory": memory, "prompt": "x", case.field: case.value}
    async with mcp_client(gateway.mcp_url, gateway.key_a) as client:
        result = await client.call_tool(tool, args)
        if not result.is_error and case.field == "name":
            await client.call_tool("delete_memory", {"memory": case.value})
    if not result.is_error:
        return None
    text = result.content[0].text
    # "Error executing tool <name>: <code>: <message>"
    return text.split(": ", 2)[1]


async def via_python(cluster, tenant: str, memory: str, case: Case) -> str | None:
    from memory.encoders import get_encoder

    encode = get_encoder("hash").encode
    try:
        if case.field == "name":
            await cluster.create_memory(tenant, case.value, HASH)
            await cluster.delete_memory(tenant, case.value)
        elif case.field == "tag":
            await cluster.checkpoint(tenant, memory, case.value)
        elif case.field in OBSERVE_FIELDS:
            text = case.value if case.field == "text" else "x"
            options = {} if case.field == "text" else {case.field: case.value}
            vectors = encode([text if isinstance(text, str) and text.strip() else "x"])
            await cluster.observe(tenant, memory, vectors, [text], **options)
        else:
            await cluster.infer(tenant, memory, encode(["x"])[0], "x", **{case.field: case.value})
    except NeuralMemoryError as exc:
        return _code_of_exception(exc)
    return None


# ---- the test ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def python_api(gateway):
    """A MemoryCluster of our own on the gateway's namespace and storage (same supervisor)."""
    from cluster import ClusterSettings, MemoryCluster
    from storage import StorageSettings
    loop = asyncio.new_event_loop()
    cluster = MemoryCluster(ClusterSettings(namespace=gateway.namespace,
                                            storage=StorageSettings(**gateway.storage)))
    loop.run_until_complete(cluster.start())
    yield loop, cluster
    loop.run_until_complete(cluster.close())
    loop.close()


@pytest.fixture(scope="module")
def contract_memory(gateway) -> str:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=gateway.base_url, headers=gateway.headers(), timeout=120) as api:
        created = api.post("/v1/memories", json={"name": name, "config": HASH})
        assert created.status_code == 201, created.text
        assert api.post(f"/v1/memories/{name}/observe", json={"context": "seed fact"}).status_code == 200
    return name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rest_mcp_and_python_give_one_verdict(gateway, python_api, contract_memory, case):
    loop, cluster = python_api
    if case.field == "tag" and case.ok:  # tags are create-only: one per entry point
        cases = [Case("tag", f"{case.value[:-3]}{i}{case.value[-2:]}" if len(case.value) > 3
                      else f"{case.value}-{i}", True) for i in range(3)]
    else:
        cases = [case] * 3
    verdicts = {
        "rest": via_rest(gateway, contract_memory, cases[0]),
        "mcp": anyio.run(via_mcp, gateway, contract_memory, cases[1]),
        "python": loop.run_until_complete(via_python(cluster, gateway.tenant_a, contract_memory, cases[2])),
    }
    expected = None if case.ok else "invalid_input"
    assert verdicts == {"rest": expected, "mcp": expected, "python": expected}, verdicts


@pytest.mark.parametrize("tenant, ok", [
    ("acme", True), ("Team.A_b-1", True), ("alice@example.com", True), ("t" * 128, True),
    ("t" * 129, False), ("-lead", False), ("a/b", False), ("a b", False), ("", False),
])
def test_tenant_rule_is_one_rule(tenant, ok):
    """Tenants enter through API-key configuration (serve), the Python API (cluster) and key
    building (storage): one verdict from each."""
    from cluster import qualify
    from serve.auth import parse_pairs
    from storage import check_name

    def verdict(fn) -> bool:
        try:
            fn()
        except NeuralMemoryError:
            return False
        return True

    verdicts = {
        "serve": verdict(lambda: parse_pairs(f"key-{uuid.uuid4().hex}:{tenant}", "test")),
        "cluster": verdict(lambda: qualify(tenant, "notes")),
        "storage": verdict(lambda: check_name(f"{tenant}/notes")),
    }
    assert verdicts == {"serve": ok, "cluster": ok, "storage": ok}, verdicts
