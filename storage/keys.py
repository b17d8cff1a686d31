"""Every Redis key and checkpoint object key, built in one place.

Layout (prefix defaults to "nmem"; `name` is the fully qualified "tenant/memory"):

    {p}:registry                 hash  name -> JSON registry record
    {p}:mem:{name}:stats         hash  total_observations, avg_surprise, step, weight_hash
    {p}:mem:{name}:domains       set   domains seen
    {p}:mem:{name}:ckpt          hash  tag -> JSON checkpoint info
    {p}:mem:{name}:ckpt_order    list  tags in creation order
    {p}:mem:{name}:wal           stream  write-ahead log
    {p}:mem:{name}:history       list  JSON observation summaries, newest last (capped)
    {p}:mem:{name}:children      zset  child name -> creation sequence

Checkpoint objects: "{tenant}/{memory}/{tag}.ckpt".
"""

from __future__ import annotations

import re

from errors import InvalidInput

__all__ = ["Keys", "check_name", "check_tag", "object_key"]

# Names reach Redis keys and file paths, so only characters that are safe in both pass.
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
_MEMORY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")


def check_name(name: str) -> str:
    """Return `name` if it is a valid fully qualified "tenant/memory" name, else raise InvalidInput."""
    tenant, sep, memory = name.partition("/") if isinstance(name, str) else ("", "", "")
    if not sep or not _TENANT_RE.match(tenant) or not _MEMORY_RE.match(memory):
        raise InvalidInput(
            f"memory name {name!r} must be 'tenant/name': tenant of letters, digits and ._@+- "
            "(up to 128), name matching [a-z0-9][a-z0-9._-]{0,62}"
        )
    return name


def check_tag(tag: str) -> str:
    """Return `tag` if it is a valid checkpoint tag, else raise InvalidInput."""
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise InvalidInput(
            f"checkpoint tag {tag!r} must be 1-128 letters, digits or ._:@+- and start with a letter or digit"
        )
    return tag


def object_key(name: str, tag: str) -> str:
    """The checkpoint object key for memory `name` at `tag` (same layout on S3 and on disk)."""
    return f"{check_name(name)}/{check_tag(tag)}.ckpt"


class Keys:
    """Builds the Redis keys of one deployment (one prefix)."""

    def __init__(self, prefix: str = "nmem") -> None:
        self.prefix = prefix

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

    def children(self, name: str) -> str:
        return self._mem(name, "children")

    def child_seq(self) -> str:
        """Counter that orders lineage edges across the deployment."""
        return f"{self.prefix}:seq:children"

    def memory_keys(self, name: str) -> list[str]:
        """All per-memory keys (what delete_memory removes besides the registry entry)."""
        return [
            self.stats(name),
            self.domains(name),
            self.checkpoints(name),
            self.checkpoint_order(name),
            self.wal(name),
            self.history(name),
            self.children(name),
        ]
