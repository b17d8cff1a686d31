"""A memory's kept history: the log from its *history base* on, so it can be replayed exactly.

Recovery needs only the WAL after the newest auto-checkpoint; exact forgetting (actors/forget.py)
needs every change of state since some state that does not contain what is forgotten. So
instead of dropping the WAL entries an auto-checkpoint made redundant, the actor *archives*
them first: one segment object per trim in the checkpoint store ("{memory}/_log/..."), indexed
in Redis (storage/history.py). The history is then

    base (a state: genesis, or a stored copy) + archived segments + the WAL, in `seq` order.

The base is genesis (the memory as created from its config) for a memory created with history
on; a fork, an imported image or a memory from before history was kept starts its own history
at its first state (a copy of it: auto-checkpoints get pruned, the base must stay).

Retention (`NMEM_HISTORY_RETENTION`): "all" keeps everything (default: exact erasure stays
possible for everything ever observed, for ~2 KB of object storage per observation); "<N>d"
keeps at least the last N days: a *pending base* (a copy of an auto-checkpoint) is taken at a
trim; once it is N days old it becomes the base and the segments before it go, so between N
and ~2N days are kept; "none" archives nothing: the base moves to each trim point, and only
what is still in the WAL can be forgotten exactly.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Iterator

import msgpack

from errors import InvalidInput
from storage import Storage
from storage.codec import decode_wal_entry, encode_wal_entry
from storage.keys import base_key, segment_key

__all__ = ["History", "parse_retention", "GENESIS"]

DAY = 86_400.0
GENESIS = {"seq": 0, "step": 0, "object_key": None, "sha256": None}


def parse_retention(text: str) -> float | None:
    """Seconds of history to keep: None = all, 0 = none (see the module doc)."""
    value = str(text).strip().lower()
    if value == "all":
        return None
    if value == "none":
        return 0.0
    match = re.fullmatch(r"([0-9]{1,5})d", value)
    if not match or int(match.group(1)) < 1:
        raise InvalidInput(f"history retention {text!r} must be 'all', 'none' or a number of days like '30d'")
    return int(match.group(1)) * DAY


def encode_segment(entries: list[dict]) -> bytes:
    return msgpack.packb([encode_wal_entry(e) for e in entries], use_bin_type=True)


def decode_segment(data: bytes) -> list[dict]:
    return [decode_wal_entry({k.encode(): v for k, v in fields.items()})
            for fields in msgpack.unpackb(data, raw=False)]


class History:
    """The kept history of memory `qname` (archive index + base in Redis, objects in the store)."""

    def __init__(self, storage: Storage, qname: str, retention: float | None, owner: int | None = None) -> None:
        self._storage = storage
        self.qname = qname
        self.retention = retention  # seconds; None: all, 0: none
        self.owner = owner  # the actor's fencing token: its trims of the log are fenced like its appends

    @property
    def _meta(self):
        return self._storage.metadata

    # ---- the base ----------------------------------------------------------------------------

    def base(self) -> dict | None:
        return self._meta.history_base(self.qname)

    def start(self, checkpoint: dict | None) -> dict:
        """Make the memory's history begin here: at genesis (`checkpoint` None) or at a copy of
        that checkpoint (seq 0 of a fork, an image, or a memory from before history was kept)."""
        base = dict(GENESIS) if checkpoint is None else self.copy_state(checkpoint)
        self._meta.set_history_base(self.qname, base)
        return base

    def copy_state(self, checkpoint: dict) -> dict:
        """A copy of checkpoint `checkpoint` that no pruning touches: a base, or a pending one."""
        key = base_key(self.qname, int(checkpoint.get("seq", 0)), uuid.uuid4().hex[:12])
        stored = self._storage.content.copy(checkpoint["object_key"], checkpoint.get("sha256"), key)  # a manifest
        return {"seq": int(checkpoint.get("seq", 0)), "step": int(checkpoint["step"]), "object_key": key,
                "sha256": stored["sha256"], "weight_hash": checkpoint["weight_hash"], "at": time.time()}

    # ---- archiving ---------------------------------------------------------------------------

    def archive_through(self, seq: int, checkpoint: dict | None) -> dict:
        """Move the WAL entries with seq <= `seq` into a segment (unless retention is "none"),
        then trim them; `checkpoint` is the auto-checkpoint holding the state at `seq`. Returns
        what was archived and dropped ({"segment": info or None, "dropped": [infos]})."""
        entries = [e for e in self._meta.wal_read_all(self.qname) if e.get("seq", -1) <= seq]
        archived = self.segments()
        done = max((s["last_seq"] for s in archived), default=0)
        # Entries without a seq predate kept history (the base holds them); a crash may have
        # archived some entries already.
        fresh = [e for e in entries if "seq" in e and e["seq"] > done]
        segment = None
        if fresh and self.retention != 0.0:
            segment = self.write_segment(fresh)
            self._meta.archive_add(self.qname, segment)
        self._meta.wal_trim_seq_through(self.qname, seq, self.owner)
        keep_all = self.retention is None or checkpoint is None or "seq" not in checkpoint
        dropped = [] if keep_all else self._apply_retention(seq, checkpoint)
        return {"segment": segment, "dropped": dropped}

    def write_segment(self, entries: list[dict]) -> dict:
        first, last = int(entries[0]["seq"]), int(entries[-1]["seq"])
        key = segment_key(self.qname, first, last, uuid.uuid4().hex[:12])
        stored = self._storage.checkpoints.put(key, encode_segment(entries))
        return {"key": key, "sha256": stored["sha256"], "first_seq": first, "last_seq": last,
                "count": len(entries), "size": int(stored["size"]), "at": float(entries[-1].get("at", 0.0))}

    def _apply_retention(self, seq: int, checkpoint: dict) -> list[dict]:
        """"none": the base moves here. "<N>d": see the module doc. Returns segments dropped."""
        base = self.base() or dict(GENESIS)
        if self.retention == 0.0:
            self._replace_base(self.copy_state({**checkpoint, "seq": seq}), base)
            return []
        pending = base.get("pending")
        if pending is None:
            base["pending"] = self.copy_state({**checkpoint, "seq": seq})
            self._meta.set_history_base(self.qname, base)
            return []
        if time.time() - float(pending["at"]) < self.retention:
            return []
        dropped = [s for s in self.segments() if s["last_seq"] <= pending["seq"]]
        self._replace_base(pending, base)
        self._meta.archive_remove(self.qname, dropped)
        for info in dropped:
            self._delete(info["key"])
        return dropped

    def _replace_base(self, new: dict, old: dict) -> None:
        new = {k: v for k, v in new.items() if k != "pending"}
        self._meta.set_history_base(self.qname, new)
        if old.get("object_key"):
            self._delete(old["object_key"])

    def _delete(self, key: str) -> None:
        try:
            self._storage.checkpoints.delete(key)
        except Exception:  # noqa: BLE001 - an orphan object is garbage, not a failure
            pass

    # ---- reading -----------------------------------------------------------------------------

    def segments(self) -> list[dict]:
        return sorted(self._meta.archive_segments(self.qname), key=lambda s: s["first_seq"])

    def read_segment(self, info: dict) -> list[dict]:
        return decode_segment(self._storage.checkpoints.get(info["key"], info.get("sha256")))

    def events(self, after_seq: int, through_seq: int | None = None,
               segments: list[dict] | None = None) -> Iterator[dict]:
        """Every logged entry with after_seq < seq <= through_seq, in seq order: the archived
        segments, then the WAL (an entry in both, after a crash mid-archive, comes once)."""
        last = after_seq
        for info in segments if segments is not None else self.segments():
            if info["last_seq"] <= after_seq or (through_seq is not None and info["first_seq"] > through_seq):
                continue
            for entry in self.read_segment(info):
                if last < entry["seq"] and (through_seq is None or entry["seq"] <= through_seq):
                    last = entry["seq"]
                    yield entry
        for entry in sorted(self._meta.wal_read_all(self.qname), key=lambda e: e.get("seq", -1)):
            if last < entry.get("seq", -1) and (through_seq is None or entry["seq"] <= through_seq):
                last = entry["seq"]
                yield entry
