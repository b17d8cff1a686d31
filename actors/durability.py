"""Checkpoints and recovery of one memory: how its state gets to storage and back.

Two kinds of checkpoints share the memory's checkpoint index:
- user tags (`checkpoint("v1")`), listed to users and restorable by name;
- auto-checkpoints, tagged `auto@<sequence>` (a character user tags cannot contain). The newest
  auto-checkpoint plus the WAL after its step *is* the memory: that is what recovery,
  rehydration and fork load. Ordering is by sequence, not step, because a restore moves the
  step backwards.

Objects are create-only and never overwritten: keys carry a random suffix, so a tag deleted and
taken again (or a memory deleted and created again) never collides with an old object. Each
object is a manifest over shared chunks (storage/cas.py): a checkpoint costs what changed since
the chunks already stored, and a fork's first checkpoint is a copy of its source's manifest.
`to_parts` / `from_parts` below are the one place that turns a memory into named parts and back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import contract
from errors import CheckpointConflict, CheckpointCorrupt, CheckpointNotFound, IncompatibleState
from storage import Storage
from storage.cas import LEGACY_PART
from storage.keys import object_key

from actors.phases import Phases
from actors.wal import RecentResults, entry_args

if TYPE_CHECKING:  # torch is imported only where a memory is actually loaded (not by the supervisor)
    from memory import MemoryConfig, NeuralMemory

__all__ = ["AUTO_PREFIX", "is_auto", "Checkpoints", "Recovered", "recover", "to_parts", "from_parts",
           "blob_to_parts", "parts_to_blob"]

log = logging.getLogger(__name__)

AUTO_PREFIX = contract.AUTO_TAG_PREFIX
# wal_trim_through(step) with this removes every entry, whatever its step.
TRIM_ALL = 2**62


def to_parts(memory: NeuralMemory) -> dict[str, bytes]:
    """The memory's state as named parts: a small mutable `head` and immutable segments."""
    return memory.state_parts()


def from_parts(parts: dict[str, bytes], expected: MemoryConfig | None = None) -> NeuralMemory:
    """A memory from its parts; a checkpoint stored as one blob (format 1) is one LEGACY_PART."""
    from memory import NeuralMemory  # noqa: PLC0415

    if set(parts) == {LEGACY_PART}:
        return NeuralMemory.from_bytes(parts[LEGACY_PART], expected)
    return NeuralMemory.from_parts(parts, expected)


def blob_to_parts(data: bytes) -> dict[str, bytes]:
    """Parts of a state given as one blob (`NeuralMemory.to_bytes()`, e.g. an imported image)."""
    from memory import NeuralMemory  # noqa: PLC0415

    return NeuralMemory.from_bytes(data).state_parts()


def parts_to_blob(parts: dict[str, bytes]) -> bytes:
    """One blob (`NeuralMemory.to_bytes()`) of a state stored as parts (e.g. to export it)."""
    if set(parts) == {LEGACY_PART}:
        return parts[LEGACY_PART]
    return from_parts(parts).to_bytes()


def is_auto(tag: str) -> bool:
    return tag.startswith(AUTO_PREFIX)


def _auto_seq(tag: str) -> int:
    try:
        return int(tag[len(AUTO_PREFIX):])
    except ValueError:
        return -1


class Checkpoints:
    """Writes and reads the checkpoints of memory `qname` (index in Redis, bytes in the store)."""

    def __init__(self, storage: Storage, qname: str) -> None:
        self._storage = storage
        self.qname = qname
        self._next_seq: int | None = None  # read from the index on the first save_auto

    def save(self, parts: dict[str, bytes], *, tag: str, step: int, weight_hash: str,
             description: str = "") -> dict:
        """Store `parts` under a fresh object key and index it as `tag` (CheckpointConflict if taken)."""
        return self._index(lambda key: self._storage.content.write(key, parts), tag=tag, step=step,
                           weight_hash=weight_hash, description=description)

    def save_auto(self, parts: dict[str, bytes], *, step: int, weight_hash: str) -> dict:
        return self.save(parts, tag=self._next_auto_tag(), step=step, weight_hash=weight_hash,
                         description="auto")

    def copy_auto(self, source: dict) -> dict:
        """A new auto-checkpoint holding checkpoint `source` (of any memory): a fork's first
        state, costing one manifest (the chunks are shared)."""
        content = self._storage.content
        return self._index(lambda key: content.copy(source["object_key"], source.get("sha256"), key),
                           tag=self._next_auto_tag(), step=int(source["step"]),
                           weight_hash=source["weight_hash"], description="auto")

    def _next_auto_tag(self) -> str:
        if self._next_seq is None:
            self._next_seq = 1 + max((_auto_seq(c["tag"]) for c in self.autos()), default=0)
        tag = f"{AUTO_PREFIX}{self._next_seq:012d}"
        self._next_seq += 1
        return tag

    def _index(self, write, *, tag: str, step: int, weight_hash: str, description: str) -> dict:
        key = object_key(self.qname, tag, nonce=uuid.uuid4().hex[:12])
        stored = write(key)
        info = {"object_key": key, "weight_hash": weight_hash, "size": int(stored["size"]),
                "stored": int(stored["stored"]), "sha256": stored["sha256"], "step": int(step),
                "description": description}
        try:
            self._storage.metadata.add_checkpoint(self.qname, tag, info)
        except CheckpointConflict:
            self._delete_object(key)
            raise
        return {"tag": tag, **info}

    def get(self, tag: str) -> dict:
        return {"tag": tag, **self._storage.metadata.get_checkpoint(self.qname, tag)}

    def autos(self) -> list[dict]:
        """Auto-checkpoints, oldest first."""
        found = [c for c in self._storage.metadata.list_checkpoints(self.qname) if is_auto(c["tag"])]
        return sorted(found, key=lambda c: _auto_seq(c["tag"]))

    def load(self, info: dict, phases: Phases | None = None) -> NeuralMemory:
        phases = phases if phases is not None else Phases()
        parts = self.read_parts(info)
        phases.lap("checkpoint_fetch")
        memory = from_parts(parts)
        phases.lap("checkpoint_decode")
        return memory

    def read_parts(self, info: dict) -> dict[str, bytes]:
        """The stored parts of checkpoint `info` (a manifest's, or a format-1 blob as one part)."""
        return self._storage.content.read(info["object_key"], info.get("sha256"))

    def prune_autos(self, keep: int) -> None:
        """Delete all but the newest `keep` auto-checkpoints (index entry, then object)."""
        autos = self.autos()
        for info in autos[: max(0, len(autos) - keep)]:
            self._storage.metadata.delete_checkpoint(self.qname, info["tag"])
            self._delete_object(info["object_key"])

    def _delete_object(self, key: str) -> None:
        try:
            self._storage.checkpoints.delete(key)
        except Exception as exc:  # noqa: BLE001 - an orphan object is garbage, not a failure
            log.warning("could not delete checkpoint object %s: %s", key, exc)


@dataclass
class Recovered:
    """A memory rebuilt from its newest usable auto-checkpoint plus WAL replay."""

    memory: NeuralMemory
    checkpoint_step: int | None  # step of the auto-checkpoint loaded (None: built from config)
    replayed: int  # WAL entries applied on top of it
    results: RecentResults = field(default_factory=lambda: RecentResults(1))
    autos: list[dict] = field(default_factory=list)  # the auto-checkpoints found, oldest first
    # Replayed writes after `history_after` as (result with weight_hash, texts, domain): the
    # ones whose stats/history a killed actor may not have recorded yet.
    unrecorded: list[tuple[dict, list[str], str | None]] = field(default_factory=list)
    fell_back: bool = False  # the newest auto-checkpoint was unusable: save a fresh one soon


class _Unusable(Exception):
    """This starting point cannot rebuild the memory (a gap in the log, or a hash that differs
    from what a newer checkpoint recorded)."""


class _EntryFailed(Exception):
    def __init__(self, entry: dict, cause: BaseException) -> None:
        super().__init__(f"WAL entry at step {entry['step']} failed to apply: {cause!r}")
        self.entry = entry


def _starting_points(ckpts: Checkpoints, config: MemoryConfig, autos: list[dict]) -> list[tuple]:
    """(info or None, loader) for each way to rebuild, best first: the auto-checkpoints, newest
    first, then the memory as created from its config (genesis, usable when the log reaches
    back to step 1). Loaders load afresh each call: a failed replay spoils what it touched."""
    from memory import NeuralMemory  # noqa: PLC0415

    points: list[tuple] = [(info, lambda phases, info=info: ckpts.load(info, phases))
                           for info in reversed(autos)]
    points.append((None, lambda phases: NeuralMemory(config)))
    return points


def _replay(memory: NeuralMemory, entries: list[dict], expected: dict[int, str], results: RecentResults,
            unrecorded: list, history_after: int | None) -> int:
    """Apply the entries after `memory.step`, in order; returns how many. Checks that the log
    has no gap and that the weights match every newer checkpoint's recorded hash on the way.
    Writes past step `history_after` go to `unrecorded` (see Recovered)."""
    replayed, pending = 0, dict(expected)
    _check_expected(memory, pending)
    for entry in entries:
        vectors, texts, domain, learning_rate, request_id = entry_args(entry)
        if entry["step"] <= memory.step:  # already in the state (a checkpoint covers it)
            results.put(request_id, None)
            continue
        if entry["step"] != memory.step + len(texts):
            raise _Unusable(f"the log jumps from step {memory.step} to {entry['step']}")
        try:
            result = memory.observe_vectors(vectors, texts, domain=domain, learning_rate=learning_rate)
        except Exception as exc:  # noqa: BLE001 - any failure: this write cannot be part of the state
            raise _EntryFailed(entry, exc) from exc
        results.put(request_id, result)
        replayed += 1
        if history_after is not None and result["step"] > history_after:
            unrecorded.append(({**result, "weight_hash": memory.weight_hash}, texts, domain))
        _check_expected(memory, pending)
    if pending:
        raise _Unusable(f"the log ends at step {memory.step}, before the checkpoint at step {min(pending)}")
    return replayed


def _check_expected(memory: NeuralMemory, pending: dict[int, str]) -> None:
    """Compare with the checkpoint saved at this step, if any (and tick it off)."""
    want = pending.pop(memory.step, None)
    if want is not None and memory.weight_hash != want:
        raise _Unusable(f"at step {memory.step} the weights differ from the checkpoint saved then")


def recover(storage: Storage, qname: str, config: MemoryConfig, remember: int, *,
            ckpts: Checkpoints | None = None, phases: Phases | None = None,
            history_after: int | None = None) -> Recovered:
    """Rebuild memory `qname`: newest auto-checkpoint + replay of the WAL entries after it.

    If that checkpoint is corrupt or missing, an older one (or the memory as created) is used
    instead, provided the log reaches back to it and replay reproduces the weight hash every
    newer checkpoint recorded; otherwise CheckpointCorrupt. A logged write that fails to apply
    was never acknowledged: it is dropped from the log and the rebuild starts over without it.
    Entries at or below the starting step are not applied again, but their request ids are
    remembered so a retried write that already reached the checkpoint is not applied twice.
    Replayed writes past step `history_after` (the newest step the history holds) come back in
    `unrecorded`, with their weight hash, so their stats and history can be written again.
    `phases`, if given, gets the time of each step (index, fetch, decode, WAL read, replay).
    """
    phases = phases if phases is not None else Phases()
    ckpts = ckpts if ckpts is not None else Checkpoints(storage, qname)
    autos = ckpts.autos()
    phases.lap("checkpoint_index")
    entries = storage.metadata.wal_read_after(qname, 0)
    phases.lap("wal_read")
    points = _starting_points(ckpts, config, autos)
    for rank, (info, load) in enumerate(points):
        newer = autos[autos.index(info) + 1:] if info is not None else autos
        expected = {int(c["step"]): c["weight_hash"] for c in newer}
        while True:
            try:
                memory = load(phases)
            except (CheckpointCorrupt, CheckpointNotFound, IncompatibleState) as exc:
                log.error("auto-checkpoint %s of %s unusable (%s); trying an older start", info["tag"], qname, exc)
                break
            results, unrecorded = RecentResults(remember), []
            try:
                replayed = _replay(memory, entries, expected, results, unrecorded, history_after)
            except _Unusable as exc:
                log.error("cannot rebuild %s from %s: %s", qname, info["tag"] if info else "its config", exc)
                break
            except _EntryFailed as exc:
                entries = _drop_failed(storage, qname, entries, exc)
                continue
            phases.lap("wal_replay")
            return Recovered(memory=memory, checkpoint_step=None if info is None else int(info["step"]),
                             replayed=replayed, results=results, autos=autos, unrecorded=unrecorded,
                             fell_back=rank > 0 and bool(autos))
    raise CheckpointCorrupt(f"memory {qname} cannot be rebuilt: no saved state loads and its log does "
                            "not reach back far enough; restore a tagged checkpoint or delete it")


def _drop_failed(storage: Storage, qname: str, entries: list[dict], failed: _EntryFailed) -> list[dict]:
    """Remove a write that cannot be applied from the log (and from this replay)."""
    entry = failed.entry
    request_id = (entry.get("options") or {}).get("request_id")
    log.error("memory %s: %s; dropping it from the log", qname, failed)
    if request_id:  # every actor-written entry has one; without it, only this replay skips it
        storage.metadata.wal_drop(qname, after_step=entry["step"] - 1, request_id=request_id)
    return [e for e in entries if e is not entry]
