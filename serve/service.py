"""What every gateway call does after auth and validation: encode the text, call the cluster.

REST routes and MCP tools both call a `TenantService` (one caller's view), so the two
protocols cannot drift apart. Results come shaped by the cluster (as the REST responses); this
layer only encodes text and the protocol layers only validate and serialise.

The text -> vector step uses the encoder named in each memory's config. That lookup costs a
Redis round trip, so it is cached for `encoder_cache_seconds` (and dropped when this replica
creates or deletes the memory); another replica deleting and re-creating a memory with a
different encoder is noticed when the entry expires.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

import contract as C
from errors import InvalidInput
from serve.metrics import GatewayMetrics

EncodeFn = Callable[[str, list[str]], Awaitable[np.ndarray]]  # (encoder, texts) -> (n, dim) float32


class MemoryService:
    """Shared by all tenants of one gateway replica: the cluster, the encoder, a config cache."""

    def __init__(
        self,
        cluster: Any,
        encode: EncodeFn,
        metrics: GatewayMetrics | None = None,
        encoder_cache_seconds: float = 60.0,
    ) -> None:
        self.cluster = cluster
        self._encode = encode
        self.metrics = metrics
        self._cache_seconds = encoder_cache_seconds
        self._encoders: dict[tuple[str, str], tuple[str, float]] = {}
        self._forgets = 0  # forget() calls so far: a lookup that overlapped one caches nothing

    def for_tenant(self, tenant: str, key: str | None = None) -> TenantService:
        """`key`: which API key calls (a fingerprint, for audit records)."""
        return TenantService(self, tenant, key)

    async def encoder_of(self, tenant: str, name: str) -> str:
        now = time.monotonic()
        hit = self._encoders.get((tenant, name))
        if hit is not None and now - hit[1] < self._cache_seconds:
            return hit[0]
        forgets = self._forgets
        config = await self.cluster.memory_config(tenant, name)
        encoder = str(config.get("encoder", "minilm"))
        if self._forgets == forgets:  # else it may be the config of a memory deleted meanwhile
            self._encoders[(tenant, name)] = (encoder, now)
        return encoder

    def forget(self, tenant: str, name: str) -> None:
        self._encoders.pop((tenant, name), None)
        self._forgets += 1

    async def vectors(self, tenant: str, name: str, texts: list[str]) -> np.ndarray:
        """(n, dim) float32: `texts` through the encoder named in the memory's config."""
        encoder = await self.encoder_of(tenant, name)
        start = time.perf_counter()
        vectors = np.asarray(await self._encode(encoder, texts), dtype=np.float32)
        if self.metrics is not None:
            self.metrics.encode_seconds.observe(time.perf_counter() - start)
        if vectors.ndim != 2 or len(vectors) != len(texts) or not np.all(np.isfinite(vectors)):
            raise InvalidInput("the encoder returned an unusable vector for this text")
        return vectors

    async def vector(self, tenant: str, name: str, text: str) -> np.ndarray:
        return (await self.vectors(tenant, name, [text]))[0]


class TenantService:
    """One tenant's operations; memory names are short names scoped by that tenant."""

    def __init__(self, core: MemoryService, tenant: str, key: str | None = None) -> None:
        self.core = core
        self.tenant = tenant
        self.key = key
        self._cluster = core.cluster

    # ------------------------------------------------------------ registry

    async def create_memory(self, name: str, config: dict | None = None) -> dict:
        self.core.forget(self.tenant, name)
        return await self._cluster.create_memory(self.tenant, name, config)

    async def list_memories(self, cursor: str | None = None, limit: int = C.DEFAULT_PAGE,
                            prefix: str | None = None) -> dict:
        return await self._cluster.list_memories(self.tenant, cursor, limit, prefix)

    async def delete_memory(self, name: str) -> dict:
        self.core.forget(self.tenant, name)
        return await self._cluster.delete_memory(self.tenant, name)

    async def lineage(self, cursor: str | None = None, limit: int = C.DEFAULT_PAGE,
                      prefix: str | None = None) -> dict:
        return await self._cluster.lineage(self.tenant, cursor, limit, prefix)

    # ------------------------------------------------------------ learning

    async def observe(
        self, name: str, context: str | list[str], learning_rate: float | None = None,
        domain: str | None = None, request_id: str | None = None, after_request_id: str | None = None,
    ) -> dict:
        """Learn one text, or a batch (a list: one write, one result per item in `items`)."""
        texts = [context] if isinstance(context, str) else list(context)
        vectors = await self.core.vectors(self.tenant, name, texts)
        result = await self._cluster.observe(self.tenant, name, vectors, texts, domain=domain,
                                             learning_rate=learning_rate, request_id=request_id,
                                             after_request_id=after_request_id,
                                             batch=not isinstance(context, str))
        if self.core.metrics is not None:
            for item in result.get("items") or [result]:
                self.core.metrics.surprise.observe(float(item["surprise"]))
        return result

    async def infer(
        self,
        name: str,
        prompt: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_k: int = 5,
    ) -> dict:
        vec = await self.core.vector(self.tenant, name, prompt)
        return await self._cluster.infer(
            self.tenant, name, vec, prompt, top_k=top_k, temperature=temperature, max_tokens=max_tokens
        )

    async def surprise(self, name: str, input: str) -> dict:  # noqa: A002 - SPEC's field name
        vec = await self.core.vector(self.tenant, name, input)
        return await self._cluster.surprise(self.tenant, name, vec, input)

    async def consolidate(self, name: str) -> dict:
        return await self._cluster.consolidate(self.tenant, name)

    # ------------------------------------------------------------ state

    async def checkpoint(self, name: str, tag: str, description: str = "") -> dict:
        return await self._cluster.checkpoint(self.tenant, name, tag, description=description)

    async def list_checkpoints(self, name: str) -> dict:
        return await self._cluster.list_checkpoints(self.tenant, name)

    async def restore(self, name: str, tag: str) -> dict:
        return await self._cluster.restore(self.tenant, name, tag)

    async def fork(self, name: str, new_name: str, source_tag: str | None = None) -> dict:
        self.core.forget(self.tenant, new_name)
        return await self._cluster.fork(self.tenant, name, new_name, source_tag=source_tag)

    async def export_state(self, name: str, tag: str | None = None) -> Any:
        return await self._cluster.export_state(self.tenant, name, tag)

    async def import_state(self, name: str, state: Any) -> dict:
        self.core.forget(self.tenant, name)
        return await self._cluster.import_state(self.tenant, name, state)

    # ------------------------------------------------------------ forgetting

    async def forget(self, name: str, text: str | None = None, texts: list[str] | None = None,
                     domain: str | None = None, steps: dict | None = None, mode: str = "exact",
                     dry_run: bool = False, checkpoints: str = "rebuild", forks: bool = False,
                     request_id: str | None = None) -> dict:
        """Start a forget job (exactly one selector: text, texts, domain or steps {from, to});
        a retry with the same `request_id` gets the job the first call started."""
        selector = {k: v for k, v in {"text": text, "texts": texts, "domain": domain, "steps": steps}.items()
                    if v is not None}
        request = {"selector": selector, "mode": mode, "dry_run": dry_run, "checkpoints": checkpoints,
                   "forks": forks}
        return await self._cluster.forget(self.tenant, name, request, {"tenant": self.tenant, "key": self.key},
                                          request_id)

    async def forget_status(self, name: str, job_id: str) -> dict:
        return await self._cluster.forget_status(self.tenant, name, job_id)

    async def audit(self, limit: int = 100) -> dict:
        return await self._cluster.audit(self.tenant, limit)

    # ------------------------------------------------------------ introspection

    async def stats(self, name: str) -> dict:
        return await self._cluster.stats(self.tenant, name)

    async def attention_map(self, name: str, query: str) -> dict:
        vec = await self.core.vector(self.tenant, name, query)
        return await self._cluster.attention_map(self.tenant, name, vec, query)

    async def explain(self, name: str, top_k: int = 5) -> dict:
        return await self._cluster.explain(self.tenant, name, top_k=top_k)

    async def history(self, name: str, limit: int = 200) -> dict:
        return await self._cluster.history(self.tenant, name, limit=limit)
