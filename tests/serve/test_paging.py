"""Listings come in pages over REST, MCP and the Python client: cursor, limit and prefix, with
`next_cursor` until the last page. Memories are registered straight in the gateway's metadata
(listing never starts an actor) under tenant B, and removed afterwards."""

from __future__ import annotations

import uuid

import anyio
import pytest

from neural_memory import Client
from tests.serve.helpers import error_of, ok
from tests.serve.test_mcp import call, mcp_client

COUNT = 23


@pytest.fixture(scope="module")
def listed(gateway):
    from storage import MetadataStore

    meta = MetadataStore(gateway.storage["redis_url"], prefix=gateway.storage["redis_prefix"])
    stem = f"pg{uuid.uuid4().hex[:6]}-"
    names = [f"{stem}{i:02d}" for i in range(COUNT)]
    for i, name in enumerate(names):
        meta.create_memory(f"{gateway.tenant_b}/{name}", {"config": {"encoder": "hash"}, "encoder": "hash",
                                                          "parent": f"{gateway.tenant_b}/{names[0]}" if i else None})
    yield stem, names
    for name in names:
        meta.delete_memory(f"{gateway.tenant_b}/{name}")
    meta.close()


def test_rest_pages_walk_every_memory_once(api_b, listed):
    stem, names = listed
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10, "prefix": stem, **({"cursor": cursor} if cursor else {})}
        page = ok(api_b.get("/v1/memories", params=params))
        seen += [m["name"] for m in page["memories"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names and pages == 3
    assert all(m["total_observations"] == 0 and not m["live"]
               for m in ok(api_b.get("/v1/memories", params={"prefix": stem}))["memories"])
    lineage = ok(api_b.get("/v1/lineage", params={"prefix": stem, "limit": 5}))
    assert [n["name"] for n in lineage["memories"]] == names[:5] and lineage["next_cursor"] == names[4]
    assert {n["parent"] for n in lineage["memories"][1:]} == {names[0]}


@pytest.mark.parametrize("params, field", [({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                                           ({"cursor": "Not A Name"}, "cursor"), ({"prefix": "a*b"}, "prefix")])
def test_bad_page_arguments_are_refused(api_b, params, field):
    assert field in error_of(api_b.get("/v1/memories", params=params), 422)["message"]


def test_mcp_and_python_client_page_alike(gateway, listed):
    stem, names = listed

    async def mcp_pages() -> list[str]:
        async with mcp_client(gateway.mcp_url, gateway.key_b) as c:
            first = await call(c, "list_memories", prefix=stem, limit=20)
            rest = await call(c, "list_memories", prefix=stem, limit=20, cursor=first["next_cursor"])
            assert rest["next_cursor"] is None
            return [m["name"] for m in first["memories"] + rest["memories"]]

    assert anyio.run(mcp_pages) == names
    with Client(gateway.base_url, api_key=gateway.key_b) as nm:
        page = nm.list_memories(prefix=stem, limit=20)
        more = nm.list_memories(cursor=page.next_cursor, prefix=stem)
        assert [m.name for m in page.memories + more.memories] == names and more.next_cursor is None
