"""Every Redis key and checkpoint object key, built in one place.

Layout (prefix defaults to "nmem"; `name` is the fully qualified "tenant/memory"):

    {p}:registry                 hash  name -> JSON registry record
    {p}:mem:{name}:stats         hash  total_observations, step, weight_hash, recorded_step (scripts.py RECORD_WRITE)
    {p}:mem:{name}:domains       set   domains seen
    {p}:mem:{name}:ckpt          hash  tag -> JSON checkpoint info
    {p}:mem:{name}:ckpt_order    list  tags in creation order
    {p}:mem:{name}:wal           stream  write-ahead log
    {p}:mem:{name}:history       list  JSON observation summaries, newest last (capped)
    {p}:mem:{name}:archive       list  JSON infos of the archived log segments, oldest first
    {p}:mem:{name}:base          string JSON: the state the memory's kept history starts from
    {p}:mem:{name}:jobs          hash  job id -> JSON forget job (status, report)
    {p}:mem:{name}:owner         string  the fencing token of the actor that serves it (scripts.py TAKE_OWNERSHIP)
    {p}:mem:{name}:writes        list  msgpack records of the newest answered writes (request id,
                                       fingerprint, answer), oldest first (capped; scripts.py RECORD_WRITE)
    {p}:mem:{name}:forgotten_writes  set  request ids of writes a forget took observations from
    {p}:audit:{tenant}           list  JSON audit records of the tenant's forget jobs (kept
                                       after the memory is deleted)
    {p}:names:{tenant}           zset  the tenant's memory names, all score 0 (paged by name)
    {p}:names-indexed            string  set once the name sets hold every registered name
    {p}:owners-issued            counter the last fencing token handed to an actor (never reused)
    {p}:cas:claims               zset  chunk sha256 -> Redis time of its newest claim (storage/cas.py)
    {p}:cas:doomed               hash  chunk sha256 -> time GC began deleting it
    {p}:cas:gc                   string  lock held by the one running garbage collection

Checkpoint objects: "{tenant}/{memory}/{tag}[-{nonce}].ckpt" (a manifest, or a format-1 blob);
chunks: "_chunks/{sha[:2]}/{sha}" ('_' starts no tenant, so no memory's prefix covers them);
archived log segments: "{tenant}/{memory}/_log/{first seq}-{last seq}-{nonce}.wal"; copies of
the history base: "{tenant}/{memory}/_base/{seq}-{nonce}.ckpt" (both under the memory's prefix,
so deleted with it).
"""

from __future__ import annotations

import re

import contract
from errors import InvalidInput, MemoryNotFound, Superseded

__all__ = ["Keys", "check_name", "check_tag", "memory_not_found", "superseded", "shown", "object_key", "segment_key", "base_key", "SEGMENT_SUFFIX"]

# Tags as stored: a user tag, or an internal auto-checkpoint tag ("auto@" + a sequence number).
_STORED_TAG = re.compile(rf"{contract.TAG_PATTERN}|{re.escape(contract.AUTO_TAG_PREFIX)}[0-9]{{1,20}}")


def check_name(name: str) -> str:
    """Return `name` if it is a valid fully qualified "tenant/memory" name, else raise InvalidInput.
    Both parts follow `contract`: only characters safe in Redis keys and file paths pass."""
    tenant, sep, memory = name.partition("/") if isinstance(name, str) else ("", "", "")
    if not sep:
        raise InvalidInput(f"memory name {name!r} must be qualified as 'tenant/name'")
    contract.check_tenant(tenant)
    contract.check_memory_name(memory)
    return name


def shown(name: str | None) -> str:
    """A qualified memory name as its tenant knows it, for messages: the short name (a tenant
    only ever sees its own memories). A spare actor's None stays visible as such."""
    return str(name).partition("/")[2] or str(name)


def memory_not_found(name: str) -> MemoryNotFound:
    """The error for a qualified name that is not registered."""
    return MemoryNotFound(f"memory {shown(name)} not found")


def superseded(name: str, what: str) -> Superseded:
    """The error for an actor that another has taken memory `name` from (its fencing token is
    no longer the memory's; storage/wal.py `take_ownership`); `what` says what was not done."""
    return Superseded(f"memory {shown(name)} is now served by a newer actor; {what}")


def check_tag(tag: str) -> str:
    """Return `tag` if it is a user checkpoint tag or an auto-checkpoint tag, else raise InvalidInput."""
    if isinstance(tag, str) and _STORED_TAG.fullmatch(tag):
        return tag
    contract.check_tag(tag)  # raises with the user-facing message
    return tag


def object_key(name: str, tag: str, nonce: str | None = None) -> str:
    """The checkpoint object key for memory `name` at `tag` (same layout on S3 and on disk).
    A `nonce` (hex) makes the key unique, so a tag taken again never meets an old object."""
    suffix = "" if nonce is None else f"-{_nonce(nonce)}"
    return f"{check_name(name)}/{check_tag(tag)}{suffix}.ckpt"


def _nonce(nonce: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{1,32}", nonce):
        raise InvalidInput(f"object key nonce {nonce!r} must be 1-32 lowercase hex digits")
    return nonce


SEGMENT_SUFFIX = ".wal"  # archived log segments: plain objects, neither manifests nor chunks


def segment_key(name: str, first_seq: int, last_seq: int, nonce: str) -> str:
    """The object key of an archived log segment (entries first_seq..last_seq)."""
    return f"{check_name(name)}/_log/{int(first_seq):012d}-{int(last_seq):012d}-{_nonce(nonce)}{SEGMENT_SUFFIX}"


def base_key(name: str, seq: int, nonce: str) -> str:
    """The object key of a copy of the state the memory's history starts from."""
    return f"{check_name(name)}/_base/{int(seq):012d}-{_nonce(nonce)}.ckpt"


class Keys:
    """Builds the Redis keys of one deployment (one prefix)."""

    def __init__(self, prefix: str = "nmem") -> None:
        self.prefix = prefix

    def health_probe(self) -> str:
        """What readiness probes write (with a TTL) to prove the server takes writes."""
        return f"{self.prefix}:health-probe"

    def registry(self) -> str:
        return f"{self.prefix}:registry"

    def _mem(self, name: str, part: str) -> str:
        return f"{self.prefix}:mem:{check_name(name)}:{part}"

    def stats(self, name: str) -> str:
        return self._mem(name, "stats")

    def domains(self, name: str) -> str:
        return self._mem(name, "domains")

    def checkpoints(self, name: str) -> str:
        return self._mem(name, "ckpt")

    def checkpoint_order(self, name: str) -> str:
        return self._mem(name, "ckpt_order")

    def wal(self, name: str) -> str:
        return self._mem(name, "wal")

    def history(self, name: str) -> str:
        return self._mem(name, "history")

    def archive(self, name: str) -> str:
        return self._mem(name, "archive")

    def history_base(self, name: str) -> str:
        return self._mem(name, "base")

    def jobs(self, name: str) -> str:
        return self._mem(name, "jobs")

    def owner(self, name: str) -> str:
        """The fencing token of the one actor that may write the memory's log."""
        return self._mem(name, "owner")

    def owners_issued(self) -> str:
        return f"{self.prefix}:owners-issued"

    def writes(self, name: str) -> str:
        """Records of the newest answered writes, so a retry is known after a restart (actors/wal.py)."""
        return self._mem(name, "writes")

    def forgotten_writes(self, name: str) -> str:
        """Request ids of writes a forget took observations from (actors/erasure.py)."""
        return self._mem(name, "forgotten_writes")

    def audit(self, tenant: str) -> str:
        return f"{self.prefix}:audit:{contract.check_tenant(tenant)}"

    def names(self, tenant: str) -> str:
        return f"{self.prefix}:names:{contract.check_tenant(tenant)}"

    def names_marker(self) -> str:
        """Set once every registered name is in its tenant's name set (storage/registry_pages.py)."""
        return f"{self.prefix}:names-indexed"

    def cas(self, part: str) -> str:
        """Content-store bookkeeping: "claims", "doomed", "gc" (see storage/cas.py)."""
        return f"{self.prefix}:cas:{part}"

    def memory_keys(self, name: str) -> list[str]:
        """All per-memory keys (what delete_memory removes besides the registry entry)."""
        return [
            self.stats(name),
            self.domains(name),
            self.checkpoints(name),
            self.checkpoint_order(name),
            self.wal(name),
            self.history(name),
            self.archive(name),
            self.history_base(name),
            self.jobs(name),
            self.forgotten_writes(name),
            self.writes(name),
            self.owner(name),
        ]
