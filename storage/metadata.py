"""MetadataStore: registry, stats, checkpoint index and history on Redis/Valkey.

Lineage is the registry's own `parent` / `source_tag` fields; the running average surprise is
the memory's own (`NeuralMemory.avg_surprise`), so neither is kept twice here.

Names are fully qualified "tenant/memory". Every key comes from storage/keys.py; every
multi-key update runs as one Lua script (storage/scripts.py) or one MULTI/EXEC, so readers
never see half an update. Writes to a memory that is not registered raise MemoryNotFound,
so a late write from a stale actor cannot resurrect a deleted memory. The write-ahead log
methods live in storage/wal.py (WalMixin), paged listings in storage/registry_pages.py, the
content store's claims in storage/content_index.py, and the kept history, forget jobs and audit
records in storage/history.py (HistoryMixin).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from errors import (
    Busy,
    CheckpointConflict,
    CheckpointNotFound,
    InvalidInput,
    MemoryExists,
    QuotaExceeded,
)
from storage import scripts
from storage.codec import dumps_json, encode_write_record, loads_json
from storage.keys import Keys, check_name, check_tag, memory_not_found, shown
from storage.translate import redacted_url, redis_errors
from storage.history import AUDIT_CAP, HistoryMixin
from storage.content_index import ContentIndexMixin
from storage.registry_pages import RegistryPagesMixin
from storage.wal import WalMixin

__all__ = ["MetadataStore", "cut_history_text", "HISTORY_CAP"]

HISTORY_TEXT_LIMIT = 200  # characters of observed text kept per history item
HISTORY_CAP = 1000  # history items kept per memory (the newest)
HEALTH_PROBE_TTL_S = 60  # the readiness probe's key goes by itself


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _describe_client(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


class MetadataStore(WalMixin, RegistryPagesMixin, ContentIndexMixin, HistoryMixin):
    """Metadata of every memory, on one Redis/Valkey server (given as a URL or a redis.Redis)."""

    def __init__(
        self,
        redis_url: str | redis.Redis,
        *,
        prefix: str = "nmem",
        timeout: float = 5.0,
    ) -> None:
        if isinstance(redis_url, redis.Redis):
            self._client, self._owns_client = redis_url, False
            self.where = _describe_client(redis_url)
        else:
            self._client = redis.Redis.from_url(
                redis_url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                # Two quick retries ride out a server restart without hiding a real outage.
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
                health_check_interval=30,
            )
            self._owns_client = True
            self.where = redacted_url(redis_url)
        self.keys = Keys(prefix)
        self._scripts = {
            name: self._client.register_script(getattr(scripts, name)) for name in scripts.__all__
        }

    @classmethod
    def from_settings(cls, settings: Any) -> "MetadataStore":
        if settings.redis_url is None:
            raise InvalidInput(
                "MetadataStore.from_settings needs a redis_url; use open_storage for the embedded default"
            )
        return cls(settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout)

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client (for tests and tools; prefer the methods)."""
        return self._client

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        with redis_errors(self.where):
            return self._scripts[script](keys=keys, args=args)

    def _registered_read(self, name: str, *reads: Callable[[Any], Any]) -> list[Any]:
        """Run `reads` on one MULTI/EXEC pipeline after checking `name` is registered."""
        check_name(name)
        with redis_errors(self.where):
            pipe = self._client.pipeline(transaction=True)
            pipe.hexists(self.keys.registry(), name)
            for read in reads:
                read(pipe)
            exists, *results = pipe.execute()
        if not exists:
            raise memory_not_found(name)
        return results

    def ping(self) -> None:
        """Raise MetadataError unless the server takes a write (readiness probes): a PING was
        answered by a server refusing every write (its disk full, it could not append to its
        log)."""
        with redis_errors(self.where):
            self._client.set(self.keys.health_probe(), "1", ex=HEALTH_PROBE_TTL_S)

    def keeps_a_log(self) -> bool | None:
        """Whether the server keeps an append-only file (its `appendonly`), without which a
        restart loses what it held; None if it will not say (CONFIG refused, as some managed
        services do)."""
        try:
            answer = self._client.config_get("appendonly")
        except redis.RedisError:
            return None
        value = answer.get("appendonly") if isinstance(answer, dict) else None
        if isinstance(value, bytes):
            value = value.decode()
        return None if value is None else value.lower() == "yes"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # -- registry ---------------------------------------------------------------------------

    def create_memory(self, name: str, record: dict, *, tenant_limit: int | None = None) -> dict:
        """Register `name` (stamped `created_at` unless given); the record stored. MemoryExists if
        taken; QuotaExceeded if its tenant already has `tenant_limit` memories (checked in the
        same step). A `parent` in the record is the lineage edge (the memory it was forked from)."""
        check_name(name)
        if not isinstance(record, dict):
            raise InvalidInput("memory record must be a dict")
        rec = {"name": name, "tenant": name.split("/", 1)[0], "parent": None, "source_tag": None}
        rec.update(record)
        rec.setdefault("created_at", _now())
        if rec["parent"] is not None:
            check_name(rec["parent"])
        tenant, short = name.split("/", 1)
        keys = [self.keys.registry(), self.keys.names(tenant)]
        limit = [] if tenant_limit is None else [int(tenant_limit)]
        created = self._run("CREATE_MEMORY", keys, [name, short, dumps_json(rec), *limit])
        if created == -1:
            raise QuotaExceeded(f"tenant {tenant} already has {tenant_limit} memories, the most allowed")
        if not created:
            raise MemoryExists(f"memory {shown(name)} already exists")
        return rec

    def get_memory(self, name: str) -> dict:
        check_name(name)
        with redis_errors(self.where):
            raw = self._client.hget(self.keys.registry(), name)
        if raw is None:
            raise memory_not_found(name)
        return loads_json(raw)

    def memory_exists(self, name: str) -> bool:
        check_name(name)
        with redis_errors(self.where):
            return bool(self._client.hexists(self.keys.registry(), name))

    def list_memories(self, tenant: str | None = None) -> list[dict]:
        """Every registry record, sorted by name; only `tenant`'s when given. Reads the whole
        registry: for tools and tests; listings for callers page with `list_page`."""
        match = None if tenant is None else _tenant_match(tenant)
        with redis_errors(self.where):
            items = list(self._client.hscan_iter(self.keys.registry(), match=match, count=500))
        return [loads_json(raw) for _name, raw in sorted(items)]

    def records_being_created(self) -> list[dict]:
        """Every registry record still marked `creating` (cluster/creating.py): one pass over
        the registry, parsing only those records, for the periodic sweep of creations whose
        creator died."""
        with redis_errors(self.where):
            return [loads_json(raw) for _name, raw in self._client.hscan_iter(self.keys.registry(), count=1000)
                    if b'"creating"' in raw]

    def count_memories(self, tenant: str) -> int:
        """How many memories `tenant` has (for its quota): the size of its name set, O(1)."""
        _tenant_match(tenant)
        with redis_errors(self.where):
            return int(self._client.zcard(self.keys.names(tenant)))

    def delete_memory(self, name: str, *, creating: str | None = None) -> None:
        """Remove the registry entry, stats, checkpoint index, WAL, history and forget jobs. In
        the same script, each forget job that had not finished gets its final audit record
        (status "failed", error "memory_deleted"), so an accepted erasure is never missing from
        the tenant's audit trail, whatever happens to its actor. With `creating` (an attempt
        id), only a record that attempt is still creating is deleted; MemoryNotFound otherwise.
        Without it, Busy for a record still being created."""
        check_name(name)
        tenant, short = name.split("/", 1)
        keys = [self.keys.registry(), self.keys.names(tenant), self.keys.jobs(name), self.keys.audit(tenant),
                *self.keys.memory_keys(name)]
        args = [name, short, _now(), AUDIT_CAP, tenant, *([creating] if creating else [])]
        deleted = self._run("DELETE_MEMORY", keys, args)
        if deleted == -1:
            raise Busy(f"memory {shown(name)} is being created: delete it once its creation has answered")
        if not deleted:
            raise memory_not_found(name)

    def finish_creating(self, name: str, record: dict) -> None:
        """Drop the `creating` mark from `name`'s record (as `create_memory` returned it): the
        memory is whole. MemoryNotFound if the record is gone or no longer that one."""
        self.replace_record(name, record, {key: value for key, value in record.items() if key != "creating"})

    def replace_record(self, name: str, expected: dict, replacement: dict) -> None:
        """Swap `name`'s record for `replacement` if it is still `expected` (as read or stored
        here), in one step; MemoryNotFound otherwise. Already replaced counts as done."""
        check_name(name)
        if not self._run("SWAP_RECORD", [self.keys.registry()], [name, dumps_json(expected), dumps_json(replacement)]):
            raise memory_not_found(name)

    # -- stats ------------------------------------------------------------------------------

    def record_write(self, name: str, *, step: int, weight_hash: str, observations: int = 0,
                     domains: list[str] | None = None, history: list[dict] | None = None,
                     history_cap: int = HISTORY_CAP, write: dict | None = None, writes_cap: int = 1) -> None:
        """After a write (one round trip): add `observations` to the total, set step and hash,
        add `domains`, append `history` items (each {step, text, surprise, weight_hash}; text
        cut to HISTORY_TEXT_LIMIT, stamped `at`), keeping the newest `history_cap`, and the
        write's record ({request_id, fingerprint, answer}: see `recent_writes`), keeping the
        newest `writes_cap`. With no observations it only points the stats at `step` and
        `weight_hash`."""
        check_name(name)
        domains, history = list(domains or []), list(history or [])
        if isinstance(observations, bool) or not isinstance(observations, int) or observations < 0:
            raise InvalidInput(f"observations must be an int >= 0, got {observations!r}")
        if not isinstance(step, int) or step < 0 or not isinstance(weight_hash, str):
            raise InvalidInput("step must be an int >= 0 and weight_hash a string")
        if not all(isinstance(d, str) and d for d in domains):
            raise InvalidInput("domains must be a list of non-empty strings")
        if not all(isinstance(item, dict) for item in history) or not all(
                isinstance(cap, int) and cap >= 1 for cap in (history_cap, writes_cap)):
            raise InvalidInput("history items must be dicts, history_cap and writes_cap ints >= 1")
        at = _now()
        items = [dumps_json({**item, "text": cut_history_text(item.get("text")), "at": at}) for item in history]
        record = b"" if write is None else encode_write_record(write)
        keys = [self.keys.registry(), self.keys.stats(name), self.keys.domains(name), self.keys.history(name),
                self.keys.writes(name)]
        args = [name, observations, step, weight_hash, history_cap, writes_cap, record, len(domains), *domains,
                *items]
        if self._run("RECORD_WRITE", keys, args) == -1:
            raise memory_not_found(name)

    def get_stats(self, name: str) -> dict:
        stats, domains = self._registered_read(
            name,
            lambda p: p.hgetall(self.keys.stats(name)),
            lambda p: p.smembers(self.keys.domains(name)),
        )
        weight_hash = stats.get(b"weight_hash")
        return {
            "total_observations": int(stats.get(b"total_observations", 0)),
            "domains": sorted(d.decode() for d in domains),
            "step": int(stats.get(b"step", 0)),
            "weight_hash": weight_hash.decode() if weight_hash else None,
        }

    # -- checkpoint index -------------------------------------------------------------------

    def add_checkpoint(self, name: str, tag: str, info: dict) -> None:
        """Index checkpoint `tag`; CheckpointConflict if the tag exists (atomic across clients)."""
        check_name(name)
        check_tag(tag)
        if not isinstance(info, dict):
            raise InvalidInput("checkpoint info must be a dict")
        stored = {"created_at": _now(), "description": "", **info, "tag": tag}
        keys = [self.keys.registry(), self.keys.checkpoints(name), self.keys.checkpoint_order(name)]
        result = self._run("ADD_CHECKPOINT", keys, [name, tag, dumps_json(stored)])
        if result == -1:
            raise memory_not_found(name)
        if result == 0:
            raise CheckpointConflict(f"checkpoint tag {tag!r} already exists for memory {shown(name)}")

    def get_checkpoint(self, name: str, tag: str) -> dict:
        check_tag(tag)
        (raw,) = self._registered_read(name, lambda p: p.hget(self.keys.checkpoints(name), tag))
        if raw is None:
            raise CheckpointNotFound(f"no checkpoint tagged {tag!r} for memory {shown(name)}")
        return loads_json(raw)

    def list_checkpoints(self, name: str) -> list[dict]:
        """Checkpoint infos, oldest first (creation order)."""
        order, infos = self._registered_read(
            name,
            lambda p: p.lrange(self.keys.checkpoint_order(name), 0, -1),
            lambda p: p.hgetall(self.keys.checkpoints(name)),
        )
        return _in_creation_order(order, infos)

    def list_checkpoints_of(self, names: list[str]) -> dict[str, list[dict]]:
        """`list_checkpoints` of many memories in one round trip (a listing page's); a memory
        that is not registered (deleted meanwhile) has none."""
        for name in names:
            check_name(name)
        with redis_errors(self.where):
            pipe = self._client.pipeline(transaction=True)
            for name in names:
                pipe.lrange(self.keys.checkpoint_order(name), 0, -1)
                pipe.hgetall(self.keys.checkpoints(name))
            results = pipe.execute() if names else []
        return {name: _in_creation_order(order, infos) for name, order, infos in zip(names, results[::2], results[1::2])}

    def latest_checkpoint(self, name: str) -> dict | None:
        (tag,) = self._registered_read(name, lambda p: p.lindex(self.keys.checkpoint_order(name), -1))
        if tag is None:
            return None
        try:
            return self.get_checkpoint(name, tag.decode())
        except CheckpointNotFound:
            # Deleted between the two reads: fall back to a consistent full listing.
            infos = self.list_checkpoints(name)
            return infos[-1] if infos else None

    def delete_checkpoint(self, name: str, tag: str) -> None:
        check_name(name)
        check_tag(tag)
        keys = [self.keys.checkpoints(name), self.keys.checkpoint_order(name)]
        if not self._run("DELETE_CHECKPOINT", keys, [tag]):
            raise CheckpointNotFound(f"no checkpoint tagged {tag!r} for memory {shown(name)}")

    # -- history ----------------------------------------------------------------------------

    def history(self, name: str, limit: int = 200) -> list[dict]:
        """The newest `limit` items, newest last."""
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"history limit must be an int >= 1, got {limit!r}")
        (items,) = self._registered_read(name, lambda p: p.lrange(self.keys.history(name), -limit, -1))
        return [loads_json(raw) for raw in items]


def _tenant_match(tenant: str) -> str:
    """The HSCAN pattern of one tenant's registry entries."""
    if any(c in tenant for c in "*?[]\\/"):
        raise InvalidInput(f"tenant {tenant!r} must not contain '/', '\\\\' or glob characters")
    return f"{tenant}/*"


def cut_history_text(text: Any) -> Any:
    """A text as a history item keeps it (the first HISTORY_TEXT_LIMIT characters)."""
    if isinstance(text, str) and len(text) > HISTORY_TEXT_LIMIT:
        return text[: HISTORY_TEXT_LIMIT - 1] + "…"
    return text


def _in_creation_order(order: list[bytes], infos: dict[bytes, bytes]) -> list[dict]:
    """A memory's checkpoint infos (its index hash) in the order they were created (its list)."""
    return [loads_json(infos[tag]) for tag in order if tag in infos]
