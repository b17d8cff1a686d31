"""The content store's bookkeeping in Redis (mixed into MetadataStore): claims, dooms, GC lock.

Why these exist is explained in storage/cas.py ("Garbage collection"); here are the atomic
steps. Every time is Redis's own clock (`TIME` inside the scripts), so writers and the
collector on different machines agree without synchronised clocks.
"""

from __future__ import annotations

from typing import Any

from storage.translate import redis_errors

__all__ = ["ContentIndexMixin", "STALE_DOOM_SECONDS"]

# A chunk marked for deletion longer ago than this belongs to a collector that died mid-way;
# writers then claim it anyway. Far above one object delete (S3: 3 attempts x 30 s).
STALE_DOOM_SECONDS = 300.0
_BATCH = 500


class ContentIndexMixin:
    """Claims and dooms of chunks; relies on MetadataStore's `_client`, `keys`, `where`, `_run`."""

    _client: Any
    keys: Any
    where: str

    def server_time(self) -> float:
        """Redis's clock, in seconds."""
        with redis_errors(self.where):
            seconds, micros = self._client.time()
        return seconds + micros / 1e6

    def cas_claim(self, shas: list[str]) -> tuple[float, list[str]]:
        """Claim chunks a writer is about to reference: (the claim's time, the chunks a
        collector is deleting right now, which the writer must wait for and claim again)."""
        if not shas:
            return self.server_time(), []
        keys = [self.keys.cas("claims"), self.keys.cas("doomed")]
        now, busy = self._run("CAS_CLAIM", keys, [STALE_DOOM_SECONDS, *shas])  # type: ignore[attr-defined]
        return float(now), [b.decode() for b in busy]

    def cas_doom(self, shas: list[str], claimed_before: float) -> list[str]:
        """Mark for deletion those of `shas` with no claim at or after `claimed_before`."""
        keys = [self.keys.cas("claims"), self.keys.cas("doomed")]
        doomed: list[str] = []
        for i in range(0, len(shas), _BATCH):
            found = self._run("CAS_DOOM", keys, [claimed_before, *shas[i:i + _BATCH]])  # type: ignore[attr-defined]
            doomed += [b.decode() for b in found]
        return doomed

    def cas_claimed_since(self, shas: list[str], since: float) -> set[str]:
        """Those of `shas` claimed at or after `since` (what `cas_doom` would spare; reads only)."""
        claimed: set[str] = set()
        with redis_errors(self.where):
            for i in range(0, len(shas), _BATCH):
                batch = shas[i:i + _BATCH]
                scores = self._client.zmscore(self.keys.cas("claims"), batch)
                claimed |= {sha for sha, score in zip(batch, scores) if score is not None and score >= since}
        return claimed

    def cas_forget(self, shas: list[str]) -> None:
        """Drop the claim and doom marks of chunks that are gone."""
        with redis_errors(self.where):
            for i in range(0, len(shas), _BATCH):
                pipe = self._client.pipeline(transaction=False)
                pipe.zrem(self.keys.cas("claims"), *shas[i:i + _BATCH])
                pipe.hdel(self.keys.cas("doomed"), *shas[i:i + _BATCH])
                pipe.execute()

    def cas_prune_claims(self, before: float) -> int:
        """Forget claims older than `before` (their writers are long done or dead)."""
        with redis_errors(self.where):
            return int(self._client.zremrangebyscore(self.keys.cas("claims"), "-inf", f"({before}"))

    def gc_lock(self, token: str, ttl_seconds: int) -> bool:
        """Take the one-collector-at-a-time lock (expires by itself if its holder dies)."""
        with redis_errors(self.where):
            return bool(self._client.set(self.keys.cas("gc"), token, nx=True, ex=ttl_seconds))

    def gc_renew(self, token: str, ttl_seconds: int) -> bool:
        """Extend the lock's lease while `token` holds it; False if it was lost (expired)."""
        return bool(self._run("LOCK_RENEW", [self.keys.cas("gc")], [token, int(ttl_seconds)]))  # type: ignore[attr-defined]

    def gc_holder_ttl(self) -> int | None:
        """Seconds until the collector lock expires if its holder stops renewing it; None if free."""
        with redis_errors(self.where):
            ttl = int(self._client.ttl(self.keys.cas("gc")))
        return ttl if ttl >= 0 else None

    def gc_unlock(self, token: str) -> None:
        with redis_errors(self.where):
            if self._client.get(self.keys.cas("gc")) == token.encode():
                self._client.delete(self.keys.cas("gc"))
