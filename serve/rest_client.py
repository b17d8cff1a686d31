"""A MemoryBackend over the gateway's REST API (used by the stdio MCP proxy).

Error envelopes come back as the same exception classes the gateway raised, so the shared
MCP tools behave identically in-process and behind the proxy (default-memory creation
included: a 404 memory_not_found is a MemoryNotFound here too).
"""

from __future__ import annotations

from typing import Any

import httpx

from errors import Unavailable
from serve.error_map import error_from_body


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


class RestBackend:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, json: dict | None = None,
                    params: dict | None = None) -> dict:
        try:
            response = await self._client.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the gateway at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_from_body(response.status_code, body)
        return response.json() if response.content else {}

    def _m(self, name: str, action: str = "") -> str:
        return f"/v1/memories/{name}" + (f"/{action}" if action else "")

    async def create_memory(self, name: str, config: dict | None = None) -> dict:
        return await self._call("POST", "/v1/memories", _without_none({"name": name, "config": config}))

    async def list_memories(self) -> dict:
        return await self._call("GET", "/v1/memories")

    async def delete_memory(self, name: str) -> dict:
        await self._call("DELETE", self._m(name))
        return {"deleted": True, "name": name}

    async def lineage(self) -> dict:
        return await self._call("GET", "/v1/lineage")

    async def observe(self, name: str, context: str, learning_rate: float | None = None,
                      domain: str | None = None) -> dict:
        body = _without_none({"context": context, "learning_rate": learning_rate, "domain": domain})
        return await self._call("POST", self._m(name, "observe"), body)

    async def infer(self, name: str, prompt: str, temperature: float | None = None,
                    max_tokens: int | None = None, top_k: int = 5) -> dict:
        body = _without_none({"prompt": prompt, "temperature": temperature,
                              "max_tokens": max_tokens, "top_k": top_k})
        return await self._call("POST", self._m(name, "infer"), body)

    async def surprise(self, name: str, input: str) -> dict:  # noqa: A002 - SPEC's field name
        return await self._call("POST", self._m(name, "surprise"), {"input": input})

    async def consolidate(self, name: str) -> dict:
        return await self._call("POST", self._m(name, "consolidate"), {})

    async def checkpoint(self, name: str, tag: str, description: str = "") -> dict:
        body = {"tag": tag, "description": description}
        return await self._call("POST", self._m(name, "checkpoints"), body)

    async def list_checkpoints(self, name: str) -> dict:
        return await self._call("GET", self._m(name, "checkpoints"))

    async def restore(self, name: str, tag: str) -> dict:
        return await self._call("POST", self._m(name, "restore"), {"tag": tag})

    async def fork(self, name: str, new_name: str, source_tag: str | None = None) -> dict:
        body = _without_none({"new_name": new_name, "source_tag": source_tag})
        return await self._call("POST", self._m(name, "fork"), body)

    async def stats(self, name: str) -> dict:
        return await self._call("GET", self._m(name, "stats"))

    async def attention_map(self, name: str, query: str) -> dict:
        return await self._call("POST", self._m(name, "attention_map"), {"query": query})

    async def explain(self, name: str, top_k: int = 5) -> dict:
        return await self._call("GET", self._m(name, "explain"), params={"top_k": top_k})

    async def history(self, name: str, limit: int = 200) -> dict:
        return await self._call("GET", self._m(name, "history"), params={"limit": limit})
