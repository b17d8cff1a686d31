"""Paged listings of a tenant's memories (mixed into MetadataStore).

Each tenant has a sorted set of its memory names, all with score 0, so Redis orders them by
name and `ZRANGEBYLEX` serves one page after a cursor (the last name of the previous page),
optionally only names starting with a prefix: O(log n + page) per call, however many memories
the tenant has. The registry hash and the set are updated together (the CREATE_MEMORY and
DELETE_MEMORY scripts); `index_names` builds the sets once for a registry written before they
existed. A page's records and stats come in one pipelined round trip.
"""

from __future__ import annotations

from typing import Any

import contract
from storage.codec import loads_json
from storage.translate import redis_errors

__all__ = ["RegistryPagesMixin", "is_fork_of"]


def is_fork_of(record: dict, parent: dict | None) -> bool:
    """Whether memory `record` was forked from `parent` as it is registered now. A deleted
    memory's name can be registered again, and that new memory has none of the old one's forks:
    a fork names the creation time of the memory it came from (`parent_created_at`)."""
    if parent is None or not record.get("parent") or record["parent"] != parent.get("name"):
        return False
    made_from = record.get("parent_created_at")
    if made_from is not None:
        return made_from == parent.get("created_at")
    # A fork recorded before forks named that: it was made after its parent was created.
    return str(record.get("created_at", "")) >= str(parent.get("created_at", ""))


def _lex_bounds(after: str | None, prefix: str) -> tuple[bytes, bytes]:
    """ZRANGEBYLEX (min, max) for names > `after` that start with `prefix`."""
    low = b"[" + prefix.encode() if prefix else b"-"
    if after is not None and (not prefix or after >= prefix):
        low = b"(" + after.encode()
    high = b"[" + prefix.encode() + b"\xff" if prefix else b"+"
    return low, high


class RegistryPagesMixin:
    """`list_page` and `index_names`; relies on MetadataStore's `_client`, `keys`, `where`."""

    _client: Any
    keys: Any
    where: str

    def list_page(self, tenant: str, *, after: str | None = None, limit: int = contract.DEFAULT_PAGE,
                  prefix: str = "") -> tuple[list[dict], str | None]:
        """Up to `limit` of `tenant`'s memories named after `after` (exclusive) and starting with
        `prefix`, by name: (records, each with its stats' `step`; the cursor of the next page or
        None). Names are short (without the tenant)."""
        contract.check_tenant(tenant)
        after, limit, prefix = contract.check_page(after, limit, prefix)
        low, high = _lex_bounds(after, prefix)
        with redis_errors(self.where):
            names = [n.decode() for n in self._client.zrangebylex(
                self.keys.names(tenant), low, high, start=0, num=limit + 1)]
        more = len(names) > limit
        names = names[:limit]
        records = self._records_with_steps([f"{tenant}/{n}" for n in names])
        return records, (names[-1] if more and names else None)

    def _records_with_steps(self, qnames: list[str]) -> list[dict]:
        if not qnames:
            return []
        with redis_errors(self.where):
            pipe = self._client.pipeline(transaction=False)
            pipe.hmget(self.keys.registry(), qnames)
            for qname in qnames:
                pipe.hget(self.keys.stats(qname), "step")
            raws, *steps = pipe.execute()
        out = []
        for raw, step in zip(raws, steps):
            if raw is not None:  # deleted between the two reads
                out.append({**loads_json(raw), "step": int(step or 0)})
        self._mark_deleted_parents(out)
        return out

    def _mark_deleted_parents(self, records: list[dict]) -> None:
        """`parent_deleted` on each fork whose parent is gone (or whose name is another memory's
        now), so a listing never joins a fork to a stranger of the same name."""
        parents = sorted({r["parent"] for r in records if r.get("parent")})
        if not parents:
            return
        with redis_errors(self.where):
            raws = self._client.hmget(self.keys.registry(), parents)
        current = {name: loads_json(raw) for name, raw in zip(parents, raws) if raw is not None}
        for record in records:
            if record.get("parent"):
                record["parent_deleted"] = not is_fork_of(record, current.get(record["parent"]))

    def index_names(self) -> int:
        """Build the per-tenant name sets from the registry if that was never done (registries
        written before paging existed); returns how many names were added. Idempotent."""
        marker = self.keys.names_marker()
        with redis_errors(self.where):
            if self._client.exists(marker):
                return 0
            added = 0
            pipe = self._client.pipeline(transaction=False)
            for qname, _raw in self._client.hscan_iter(self.keys.registry(), count=1000):
                tenant, _, short = qname.decode().partition("/")
                pipe.zadd(self.keys.names(tenant), {short: 0})
                added += 1
                if len(pipe) >= 1000:
                    pipe.execute()
            pipe.set(marker, 1)
            pipe.execute()
        return added
