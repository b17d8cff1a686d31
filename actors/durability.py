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
from errors import CheckpointConflict, CheckpointCorrupt, CheckpointNotFound, IncompatibleState, InvalidInput
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


def _load_newest(ckpts: Checkpoints, config: MemoryConfig, autos: list[dict],
                 phases: Phases) -> tuple[NeuralMemory, int | None]:
    """Newest auto-checkpoint that loads; falls back to older ones, then to a fresh memory."""
    from memory import NeuralMemory  # noqa: PLC0415

    for info in reversed(autos):
        try:
            return ckpts.load(info, phases), int(info["step"])
        except (CheckpointCorrupt, CheckpointNotFound, IncompatibleState) as exc:
            log.error("auto-checkpoint %s unusable (%s); trying the one before", info["tag"], exc)
    if autos:
        # Checkpoints existed but none loads: the WAL before them is gone, so rebuilding from
        # the config would silently lose data. Refuse instead.
        raise CheckpointCorrupt(f"no auto-checkpoint of {ckpts.qname} can be loaded; see the log")
    memory = NeuralMemory(config)
    phases.lap("build_from_config")
    return memory, None


def recover(storage: Storage, qname: str, config: MemoryConfig, remember: int, *,
            ckpts: Checkpoints | None = None, phases: Phases | None = None,
            history_after: int | None = None) -> Recovered:
    """Rebuild memory `qname`: newest auto-checkpoint + replay of the WAL entries after it.

    Entries at or below the checkpoint's step are not applied again, but their request ids are
    remembered so a retried write that already reached the checkpoint is not applied twice.
    Replayed writes past step `history_after` (the newest step the history holds) come back in
    `unrecorded`, with their weight hash, so their stats and history can be written again.
    `phases`, if given, gets the time of each step (index, fetch, decode, WAL read, replay).
    """
    phases = phases if phases is not None else Phases()
    ckpts = ckpts if ckpts is not None else Checkpoints(storage, qname)
    autos = ckpts.autos()
    phases.lap("checkpoint_index")
    memory, ckpt_step = _load_newest(ckpts, config, autos, phases)
    results = RecentResults(remember)
    replayed = 0
    unrecorded: list[tuple[dict, list[str], str | None]] = []
    entries = storage.metadata.wal_read_after(qname, 0)
    phases.lap("wal_read")
    for entry in entries:
        vectors, texts, domain, learning_rate, request_id = entry_args(entry)
        if entry["step"] <= memory.step:
            results.put(request_id, None)
            continue
        try:
            result = memory.observe_vectors(vectors, texts, domain=domain, learning_rate=learning_rate)
        except InvalidInput as exc:
            # The live actor refused this write after logging it; refusing again keeps replay
            # identical to what happened (the state was not changed either time).
            log.warning("WAL entry at step %s of %s refused again on replay: %s", entry["step"], qname, exc)
            continue
        results.put(request_id, result)
        replayed += 1
        if history_after is not None and result["step"] > history_after:
            unrecorded.append(({**result, "weight_hash": memory.weight_hash}, texts, domain))
    phases.lap("wal_replay")
    return Recovered(memory=memory, checkpoint_step=ckpt_step, replayed=replayed, results=results,
                     autos=autos, unrecorded=unrecorded)
