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
from storage.keys import object_key, shown

from actors.phases import Phases
from actors.replay import EntryFailed, Replay, Unusable
from actors.wal import RecentResults, entry_args, write_fingerprint

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


def blob_to_parts(data: bytes) -> tuple[dict[str, bytes], dict]:
    """Parts of a state given as one blob (`NeuralMemory.to_bytes()`, e.g. an imported image),
    and what that state holds: its own saved `config` (every field), its `step` and the
    `weight_hash` of its weights (checked against them on decoding, or computed from them)."""
    from memory import NeuralMemory  # noqa: PLC0415
    from memory.state import non_finite, overflows  # noqa: PLC0415

    try:
        memory = NeuralMemory.from_bytes(data)
        parts = memory.state_parts()
    except (IncompatibleState, InvalidInput):
        raise
    except Exception as exc:  # noqa: BLE001 - a state made by hand can break the decoder anywhere
        raise IncompatibleState(f"the state cannot be read ({type(exc).__name__}: {exc}); export it again from "
                                "a healthy memory") from None
    broken = non_finite(parts)
    if broken:
        raise IncompatibleState(f"the state holds NaN or infinite numbers ({', '.join(broken[:5])}"
                                f"{', ...' if len(broken) > 5 else ''}): a memory made from it could neither "
                                "learn nor answer; export it again from a healthy memory")
    overflow = overflows(memory)
    if overflow:
        raise IncompatibleState(f"the state's weights are too large: {overflow}, so a memory made from it "
                                "could neither learn nor answer; export it again from a healthy memory")
    held = {"config": memory.config.to_dict(), "step": memory.step, "weight_hash": memory.weight_hash}
    failing = _fails_in_use(memory)  # last: the trial changes `memory` (`parts` are its bytes from before)
    if failing:
        raise IncompatibleState(f"the state is not consistent: {failing}, so a memory made from it would fail "
                                "there; export it again from a healthy memory")
    return parts, {**held, "step": int(held["step"])}  # only now: a crafted step is the trial's to refuse


def _fails_in_use(trial: NeuralMemory) -> str | None:
    """Which call fails on memory `trial` (a decoded copy, changed by the trial), tried once
    each, or None. An image made by hand passes every hash and shape check and can still hold
    indexes out of range (a pattern naming record 1,000,000), which only the first observe or
    explain trips on."""
    import numpy as np  # noqa: PLC0415

    probe = np.random.default_rng(0).standard_normal((1, trial.config.dim)).astype(np.float32)
    probe /= np.linalg.norm(probe)
    calls = [("explain", lambda: trial.explain()), ("infer", lambda: trial.infer_vector(probe[0])),
             ("surprise", lambda: trial.surprise_vector(probe[0], "a trial text")),
             ("attention_map", lambda: trial.attention_map_vector(probe[0])),
             ("observe", lambda: trial.observe_vectors(probe, ["a trial text"])),
             ("consolidate", lambda: trial.consolidate()), ("explain after learning", lambda: trial.explain())]
    for name, call in calls:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - any failure is the state's
            return f"{name} fails on it ({type(exc).__name__}: {exc})"
    return None


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
             description: str = "", seq: int | None = None) -> dict:
        """Store `parts` under a fresh object key and index it as `tag` (CheckpointConflict if
        taken). `seq`: the log position of the state (actors/wal.py)."""
        info = self.put_object(parts, tag=tag, step=step, weight_hash=weight_hash, description=description,
                               seq=seq)
        return self._index(info)

    def put_object(self, parts: dict[str, bytes], *, tag: str, step: int, weight_hash: str,
                   description: str = "", seq: int | None = None) -> dict:
        """Store `parts` as a checkpoint object for `tag` without indexing it; its info (a forget
        job indexes all of its objects in one commit)."""
        return self._write(lambda key: self._storage.content.write(key, parts), tag=tag, step=step,
                           weight_hash=weight_hash, description=description, seq=seq)

    def save_auto(self, parts: dict[str, bytes], *, step: int, weight_hash: str, seq: int | None = None) -> dict:
        return self.save(parts, tag=self.next_auto_tag(), step=step, weight_hash=weight_hash,
                         description="auto", seq=seq)

    def copy_auto(self, source: dict) -> dict:
        """A new auto-checkpoint holding checkpoint `source` (of any memory): a fork's first
        state, costing one manifest (the chunks are shared). It sits at position 0 of the new
        memory's own log (nothing of that log is in it), so the memory starts from it as it is:
        no checkpoint of its own until it has learned something. Its history starts at it."""
        return self._index(self.copy_object(source, tag=self.next_auto_tag()))

    def copy_object(self, source: dict, *, tag: str) -> dict:
        """Checkpoint `source` copied as an auto-checkpoint at log position 0 for `tag` (one
        manifest), not indexed yet: its info."""
        content = self._storage.content
        return self._write(lambda key: content.copy(source["object_key"], source.get("sha256"), key),
                           tag=tag, step=int(source["step"]), weight_hash=source["weight_hash"],
                           description="auto", seq=0)

    def next_auto_tag(self) -> str:
        if self._next_seq is None:
            self._next_seq = 1 + max((_auto_seq(c["tag"]) for c in self.autos()), default=0)
        tag = f"{AUTO_PREFIX}{self._next_seq:012d}"
        self._next_seq += 1
        return tag

    def _write(self, write, *, tag: str, step: int, weight_hash: str, description: str,
               seq: int | None = None) -> dict:
        key = object_key(self.qname, tag, nonce=uuid.uuid4().hex[:12])
        stored = write(key)
        info = {"tag": tag, "object_key": key, "weight_hash": weight_hash, "size": int(stored["size"]),
                "stored": int(stored["stored"]), "sha256": stored["sha256"], "step": int(step),
                "description": description}
        if seq is not None:
            info["seq"] = int(seq)
        return info

    def _index(self, info: dict) -> dict:
        info = dict(info)
        tag, key = info.pop("tag"), info["object_key"]
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
    # Replayed writes after `history_after` as (result with weight_hash, texts, domain,
    # request id, write fingerprint): the ones whose stats/history a killed actor may not have
    # recorded yet.
    unrecorded: list[tuple[dict, list[str], str | None, str | None, str]] = field(default_factory=list)
    fell_back: bool = False  # the newest auto-checkpoint was unusable: save a fresh one soon
    # Log position of the rebuilt state (its last entry); None: a state from before log
    # positions (its first checkpoint then starts the memory's kept history).
    seq: int | None = 0


def _starting_points(ckpts: Checkpoints, config: MemoryConfig, autos: list[dict]) -> list[tuple]:
    """(info or None, loader) for each way to rebuild, best first: the auto-checkpoints, newest
    first, then the memory as created from its config (genesis, usable when the log reaches
    back to step 1). Loaders load afresh each call: a failed replay spoils what it touched."""
    from memory import NeuralMemory  # noqa: PLC0415

    points: list[tuple] = [(info, lambda phases, info=info: ckpts.load(info, phases))
                           for info in reversed(autos)]
    points.append((None, lambda phases: NeuralMemory(config)))
    return points


def _position(info: dict | None, seq_era: bool) -> tuple[str, int]:
    """Where a starting point is in the log: by seq, or by step for states from before seqs."""
    if info is None:
        return ("seq", 0) if seq_era else ("step", 0)
    return ("seq", int(info["seq"])) if "seq" in info else ("step", int(info["step"]))


def _after(entries: list[dict], where: tuple[str, int]) -> list[dict]:
    """The entries a state at `where` does not hold yet, in log order: by seq; from a state of
    before log positions, the entries without a seq after its step come first."""
    kind, at = where
    positioned = sorted((e for e in entries if "seq" in e and (kind == "step" or e["seq"] > at)),
                        key=lambda e: e["seq"])
    if kind == "seq":
        return positioned
    return [e for e in entries if "seq" not in e and e["step"] > at] + positioned


def _replay(memory: NeuralMemory, entries: list[dict], expected: dict[tuple, str], results: RecentResults,
            unrecorded: list, history_after: int | None, load_tag) -> tuple[NeuralMemory, int, int | None]:
    """Apply the entries, in order: (the memory, how many, the last seq or None). Checks that the
    log has no gap and that the weights match every newer checkpoint's recorded hash on the way.
    Writes past step `history_after` go to `unrecorded` (see Recovered)."""
    replay, pending, seq = Replay(memory, load_tag), dict(expected), None
    _check_expected(replay.memory, pending, ("step", memory.step), None)
    for entry in entries:
        _entry, result = replay.apply(entry)
        seq = entry.get("seq", seq)
        if result is not None:
            _, texts, domain, learning_rate, request_id = entry_args(entry)
            fingerprint = write_fingerprint(texts, domain, learning_rate)
            results.put(request_id, result, fingerprint)
            if history_after is not None and result["step"] > history_after:
                unrecorded.append(({**result, "weight_hash": replay.memory.weight_hash},
                                   list(entry["texts"]), entry.get("domain"), request_id, fingerprint))
        _check_expected(replay.memory, pending, ("step", replay.memory.step), seq)
    if pending:
        raise Unusable(f"the log ends at step {replay.memory.step}, before a newer checkpoint")
    return replay.memory, len(entries), seq


def _check_expected(memory: NeuralMemory, pending: dict[tuple, str], step: tuple, seq: int | None) -> None:
    """Compare with the checkpoint saved at this point, if any (and tick it off)."""
    for where in (step, ("seq", seq)):
        want = pending.pop(where, None)
        if want is not None and memory.weight_hash != want:
            raise Unusable(f"at {where[0]} {where[1]} the weights differ from the checkpoint saved then")


def recover(storage: Storage, qname: str, config: MemoryConfig, remember: int, *,
            ckpts: Checkpoints | None = None, phases: Phases | None = None,
            history_after: int | None = None, applied: list[tuple[str, dict | None, str | None]] = (),
            owner: int | None = None) -> Recovered:
    """Rebuild memory `qname`: newest auto-checkpoint + replay of the WAL entries after it.

    If that checkpoint is corrupt or missing, an older one (or the memory as created) is used
    instead, provided the log reaches back to it and replay reproduces the weight hash every
    newer checkpoint recorded; otherwise CheckpointCorrupt. A logged write that fails to apply
    was never acknowledged: it is dropped from the log and the rebuild starts over without it.
    Entries the starting point holds already are not applied again, but their request ids are
    remembered so a retried write that already reached the checkpoint is not applied twice; so
    are the (request id, answer or None, fingerprint) of `applied` (writes answered before,
    whose entries a checkpoint may have trimmed from the log), oldest first.
    Replayed writes past step `history_after` (the newest step the history holds) come back in
    `unrecorded`, with their weight hash, so their stats and history can be written again.
    `phases`, if given, gets the time of each step (index, fetch, decode, WAL read, replay).
    `owner`: the rebuilding actor's token (see MetadataStore.take_ownership), which a drop of a
    failed entry must still hold.
    """
    phases = phases if phases is not None else Phases()
    ckpts = ckpts if ckpts is not None else Checkpoints(storage, qname)
    autos = ckpts.autos()
    phases.lap("checkpoint_index")
    entries = storage.metadata.wal_read_after(qname, -1)
    phases.lap("wal_read")
    seq_era = all("seq" in e for e in entries)  # genesis: is the whole log positioned?
    for rank, (info, load) in enumerate(_starting_points(ckpts, config, autos)):
        newer = autos[autos.index(info) + 1:] if info is not None else autos
        expected = {_position(c, True): c["weight_hash"] for c in newer}
        while True:
            try:
                memory = load(phases)
            except (CheckpointCorrupt, CheckpointNotFound, IncompatibleState) as exc:
                log.error("auto-checkpoint %s of %s unusable (%s); trying an older start", info["tag"], qname, exc)
                break
            where = _position(info, seq_era)
            results, unrecorded, todo = RecentResults(remember), [], _after(entries, where)
            for request_id, answer, fingerprint in applied:
                results.put(request_id, answer, fingerprint)
            pending = {id(e) for e in todo}
            for entry in entries:  # already in the state: their ids and what they wrote count
                if id(entry) not in pending:
                    _, texts, domain, learning_rate, request_id = entry_args(entry)
                    results.put(request_id, None, write_fingerprint(texts, domain, learning_rate))
            try:
                memory, replayed, seq = _replay(memory, todo, expected, results, unrecorded,
                                                history_after, lambda tag, tag_seq: ckpts.load(ckpts.get(tag)))
            except Unusable as exc:
                log.error("cannot rebuild %s from %s: %s", qname, info["tag"] if info else "its config", exc)
                break
            except EntryFailed as exc:
                entries = _drop_failed(storage, qname, entries, exc, owner)
                continue
            phases.lap("wal_replay")
            start_seq = where[1] if where[0] == "seq" else None
            return Recovered(memory=memory, checkpoint_step=None if info is None else int(info["step"]),
                             replayed=replayed, results=results, autos=autos, unrecorded=unrecorded,
                             fell_back=rank > 0 and bool(autos), seq=seq if seq is not None else start_seq)
    raise CheckpointCorrupt(f"memory {shown(qname)} cannot be rebuilt: no saved state loads and its log does "
                            "not reach back far enough; restore a tagged checkpoint or delete it")


def _drop_failed(storage: Storage, qname: str, entries: list[dict], failed: EntryFailed,
                 owner: int | None) -> list[dict]:
    """Remove a write that cannot be applied from the log (and from this replay)."""
    entry = failed.entry
    request_id = (entry.get("options") or {}).get("request_id")
    log.error("memory %s: %s; dropping it from the log", qname, failed)
    if request_id:  # every actor-written entry has one; without it, only this replay skips it
        if "seq" in entry:
            storage.metadata.wal_drop(qname, from_seq=entry["seq"], request_id=request_id, owner=owner)
        else:
            storage.metadata.wal_drop(qname, after_step=entry["step"] - 1, request_id=request_id, owner=owner)
    return [e for e in entries if e is not entry]
