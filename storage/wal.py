"""The write-ahead log: one Redis Stream per memory (mixed into MetadataStore).

An actor appends an entry (encoded vectors, texts, domain, options, step) *before* applying
it, so an acknowledged observation is never lost: recovery loads the latest checkpoint and
replays `wal_read_after(checkpoint_step)`. Once a checkpoint covers a step,
`wal_trim_through(step)` drops the entries it contains. Stream ids (assigned by the server
under its single-threaded lock) give all appends one total order, even from many clients.
"""

from __future__ import annotations

from typing import Any, Iterator

from storage.codec import decode_wal_entry, encode_wal_entry
from storage.keys import check_name, memory_not_found, superseded
from storage.translate import redis_errors

__all__ = ["WalMixin"]


def fence_token(owner: int | None) -> str:
    """An actor's fencing token as the scripts take it ('': unfenced, for tools and tests)."""
    return "" if owner is None else str(owner)


class WalMixin:
    """WAL methods of MetadataStore; relies on its `_client`, `keys`, `where`, `_run`, `_registered_read`."""

    _client: Any
    keys: Any
    where: str
    wal_page: int = 512  # entries per XRANGE / XDEL round trip

    def take_ownership(self, name: str) -> int:
        """Make the caller the one actor that may append to `name`'s log: a fencing token,
        larger than any issued before. Taken before the log is read for a rebuild, so every
        append of the actor it supersedes either is in what the new one reads or is refused."""
        check_name(name)
        keys = [self.keys.registry(), self.keys.owner(name), self.keys.owners_issued()]
        token = int(self._run("TAKE_OWNERSHIP", keys, [name]))  # type: ignore[attr-defined]
        if token == -1:
            raise memory_not_found(name)
        return token

    def check_owner(self, name: str, owner: int) -> None:
        """Superseded if another actor has taken `name` since the one holding `owner` did (a
        check before work that is not one fenced write, e.g. a checkpoint or a forget job)."""
        with redis_errors(self.where):
            current = self._client.get(self.keys.owner(name))
        if current is None or int(current) != owner:
            raise superseded(name, "this actor no longer serves it")

    def wal_append(self, name: str, entry: dict, owner: int | None = None) -> str:
        """Durably append `entry` (step, vectors: bytes, texts, domain, options); returns its stream
        id. With `owner` (the token from `take_ownership`), Superseded and nothing appended if
        another actor has taken the memory since; without it (tools, tests), unfenced."""
        check_name(name)
        fields = encode_wal_entry(entry)
        keys = [self.keys.registry(), self.keys.wal(name), self.keys.owner(name)]
        args = [name, fence_token(owner), *(item for pair in fields.items() for item in pair)]
        result = self._run("WAL_APPEND", keys, args)  # type: ignore[attr-defined]
        if result == -1:
            raise memory_not_found(name)
        if result == -2:
            raise superseded(name, "this write was not logged or applied: send it again")
        return result.decode() if isinstance(result, bytes) else str(result)

    def _wal_pages(self, name: str) -> Iterator[list[tuple[bytes, dict[bytes, bytes]]]]:
        """The whole stream, oldest first, in pages (consistent per page, not across pages)."""
        start = "-"
        while True:
            with redis_errors(self.where):
                page = self._client.xrange(self.keys.wal(name), min=start, max="+", count=self.wal_page)
            if not page:
                return
            yield page
            if len(page) < self.wal_page:
                return
            start = "(" + page[-1][0].decode()

    def wal_read_after(self, name: str, step: int) -> list[dict]:
        """Entries whose step is greater than `step`, in append order."""
        self._registered_read(name)  # type: ignore[attr-defined]
        entries = []
        for page in self._wal_pages(name):
            for _id, fields in page:
                if int(fields[b"step"]) > step:
                    entries.append(decode_wal_entry(fields))
        return entries

    def wal_read_all(self, name: str) -> list[dict]:
        """Every entry, in append order."""
        return self.wal_read_after(name, -1)

    def wal_trim_seq_through(self, name: str, seq: int, owner: int | None = None) -> int:
        """Delete the entries whose seq is <= `seq` (and any without a seq, written before logs
        had positions: a checkpoint with a seq covers them); returns how many. `owner`: as for
        `wal_drop`."""
        self._registered_read(name)  # type: ignore[attr-defined]
        doomed = [
            entry_id
            for page in self._wal_pages(name)
            for entry_id, fields in page
            if int(fields.get(b"seq", -1)) <= seq
        ]
        return self._wal_delete(name, doomed, owner)

    def wal_trim_through(self, name: str, step: int) -> int:
        """Delete the entries whose step is <= `step` (a checkpoint now covers them); returns how many."""
        self._registered_read(name)  # type: ignore[attr-defined]
        doomed = [
            entry_id
            for page in self._wal_pages(name)
            for entry_id, fields in page
            if int(fields[b"step"]) <= step
        ]
        return self._wal_delete(name, doomed)

    def wal_drop(self, name: str, *, after_step: int | None = None, from_seq: int | None = None,
                 request_id: str | None = None, owner: int | None = None) -> int:
        """Delete the entries whose step is greater than `after_step`, or whose seq is at least
        `from_seq` (only those carrying `request_id`, if given): writes that were logged but
        never applied, so never acknowledged. Returns how many went. With `owner` (see
        `wal_append`), Superseded and nothing deleted if another actor has taken the memory:
        what a successor logged at those positions is its own, acknowledged writes."""
        self._registered_read(name)  # type: ignore[attr-defined]
        doomed = []
        for page in self._wal_pages(name):
            for entry_id, fields in page:
                if from_seq is not None and int(fields.get(b"seq", -1)) < from_seq:
                    continue
                if after_step is not None and int(fields[b"step"]) <= after_step:
                    continue
                if request_id is None or decode_wal_entry(fields).get("options", {}).get(
                        "request_id") == request_id:
                    doomed.append(entry_id)
        return self._wal_delete(name, doomed, owner)

    def _wal_delete(self, name: str, entry_ids: list[bytes], owner: int | None = None) -> int:
        deleted = 0
        for i in range(0, len(entry_ids), self.wal_page):
            result = self._run("FENCED_XDEL", [self.keys.wal(name), self.keys.owner(name)],  # type: ignore[attr-defined]
                               [fence_token(owner), *entry_ids[i : i + self.wal_page]])
            if result == -2:
                raise superseded(name, "nothing of the log was dropped")
            deleted += int(result)
        return deleted

    def wal_length(self, name: str) -> int:
        """Number of entries in the memory's WAL."""
        (length,) = self._registered_read(name, lambda p: p.xlen(self.keys.wal(name)))  # type: ignore[attr-defined]
        return int(length)
