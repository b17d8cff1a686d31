"""`MemoryActor`: one Ray actor owning one `NeuralMemory`.

Threaded actor (the control plane starts it with max_concurrency > 1). Writes (observe,
consolidate, restore) hold `_write_lock` alone, so they are applied strictly in order; reads
share it (actors/rwlock.py), beside each other, so a read sees the memory as some write's answer
left it, never halfway through a batch. Every observe is appended to the WAL *before* it is applied and
acknowledged. Its stats and history (a view for listings and the dashboard, not the data) are
written afterwards by one background thread, in order, so a write is answered without waiting for
a second fsync'd round trip (`flush_records` waits for them; a killed actor's unwritten ones are
rebuilt from the WAL on recovery). A background thread writes an auto-checkpoint every N writes
or N observations (a batch counts each item), or after T seconds with a long enough tail, and
then trims the WAL; lock order is always `_ckpt_lock` before `_write_lock`.

An actor may be made before anyone knows which memory it will serve (a *spare*, qname None):
`warm()` pays the process's start-up (torch and our imports, storage connections) ahead of
time, and `start(qname)` later binds it to one memory. Starting is mostly import time, so a
warm spare turns a ~3 s rehydration into the state load (~0.1 s). `release()` hibernates the
memory and unbinds it again (every per-memory field reset as in a fresh actor, see
`_reset_binding`), so the process serves the next memory without a new start. Callers reach
the memory through `call(qname, method, ...)` (over Ray, packed by `route`), which refuses a
memory the actor no longer serves, so a stale handle can never act on the wrong memory.

The actor never encodes text: vectors arrive from the gateway's encoder.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from errors import (CheckpointCorrupt, CheckpointNotFound, InvalidInput, MetadataError, NeuralMemoryError, OutOfOrder,
                    RequestIdReused, Superseded, Unavailable)

from actors.allocator import keep_freed_buffers
from actors.binding import Rebinding
from actors.code_id import CODE_ID
from actors.durability import Checkpoints, recover, to_parts
from actors.forgetting import Forgetting
from actors.history import History, parse_retention
from actors.phases import Phases
from actors.rwlock import ReadWriteLock
from actors.spec import ActorSpec
from actors.wal import (CONSOLIDATE, RESTORE, TAG, RecentResults, applied_in_history, check_observation, history_items, make_entry,
                        make_marker, result_from_history, write_fingerprint, write_record)
from storage import shown, superseded
from storage.metadata import HISTORY_CAP

if TYPE_CHECKING:  # imported in start(): the supervisor imports this module and needs no torch
    from memory import MemoryConfig, NeuralMemory

__all__ = ["MemoryActor"]

log = logging.getLogger(__name__)

# Waits between tries of a stats/history record while Redis is away (~25 s in all: a Valkey
# restart takes about a second; `flush_records` waits up to 30 s).
RECORD_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 1.0, *(2.0,) * 11)


def out_of_order(request_id: str, qname: str, wait: float) -> OutOfOrder:
    """The refusal of a write whose predecessor `request_id` (its after_request_id) was not
    applied to memory `qname` within `wait` seconds."""
    return OutOfOrder(f"write {request_id!r}, which this one must follow (after_request_id), was not "
                      f"applied to {shown(qname)} within {wait:g} s, or so long ago that its id is no "
                      f"longer remembered; nothing of this write was applied. If {request_id!r} was "
                      "acknowledged, send this write again without after_request_id; if not, send "
                      f"{request_id!r} first")


class MemoryActor(Rebinding, Forgetting):
    """The live state of memory `qname`; wrap with `ray.remote` (see cluster.supervisor)."""

    def __init__(self, qname: str | None, spec: ActorSpec) -> None:
        # Cheap on purpose: loading happens in start(), so a failure there reaches the caller
        # as the real error instead of a generic "actor died in its constructor".
        self._spec = spec
        self._start_lock = threading.Lock()
        self._write_lock = ReadWriteLock()  # writes alone, reads shared (`_reading`)
        self._ckpt_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._calls = threading.Condition()  # routed calls in flight (see call / release)
        self._applied = threading.Condition()  # a write was applied, or the memory is closing
        self._in_flight = 0
        self._storage = None
        self._warm = False
        # One thread for the process: stats/history writes stay in write order. Each record
        # names its memory, so one queued before a release never lands on the next memory.
        self._recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._trim_timer = None  # a released process's freed heap goes back later (binding.py)
        self._reset_binding(qname)

    def _reset_binding(self, qname: str | None) -> None:
        """Everything that belongs to the memory served, as in a fresh actor: set at creation
        and again by release(), so nothing of one memory survives into the next."""
        self._qname = qname  # None: a spare, bound to a memory by start(qname)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._mem: NeuralMemory | None = None
        self._config: MemoryConfig | None = None
        self._ckpts: Checkpoints | None = None
        self._results = RecentResults(self._spec.settings.remembered_requests)
        self._forgotten_writes: set[str] = set()  # see Erasure._mark_forgotten
        self._closing = False
        # The fencing token taken at start (MetadataStore.take_ownership): the log refuses this
        # actor's appends once a successor has taken the memory; it then serves nothing more.
        self._owner: int | None = None
        self._superseded = False
        self._releasing = False
        self._started = False
        self._writes_since = 0  # writes applied since the newest auto-checkpoint
        self._last_ckpt = time.monotonic()
        self._seq = 0  # log position of the newest entry (actors/wal.py)
        self._history: History | None = None
        self._prev_auto_seq = 0  # the WAL is kept after this seq (fallback + request ids)
        self._prev_auto: dict | None = None  # the auto-checkpoint at that seq
        self._latest_auto: dict | None = None
        self._job: dict | None = None  # the running forget job (actors/forgetting.py)
        self._job_thread: threading.Thread | None = None
        self._cleanups: list[threading.Thread] = []  # forget clean-ups resumed at start
        self._job_cancel = threading.Event()
        # (step before, weights touched?, seq) of a write that failed after it was logged: its
        # entry must leave the log before anything else is logged or saved (see _settle).
        self._unsettled: tuple[int, bool, int] | None = None

    def __repr__(self) -> str:  # Ray names the actor's process and log lines after this
        return f"MemoryActor({self._qname or 'spare'})"

    # ---- lifecycle --------------------------------------------------------------------------

    def warm(self) -> dict:
        """Import torch and the model, open storage: everything start() needs but the memory."""
        with self._start_lock:
            phases = Phases()
            self._warm_up(phases)
            return {"pid": os.getpid(), "timings": phases.as_dict()}

    def start(self, qname: str | None = None) -> dict:
        """Bind to memory `qname` (a spare) and rebuild it (checkpoint + WAL replay). Idempotent."""
        with self._start_lock:
            self._bind(qname)
            self._check_owner()  # superseded: the supervisor kills this process, starts another
            if self._started:
                return self._summary()
            phases = Phases()
            was_warm = self._warm
            self._warm_up(phases)
            from memory import MemoryConfig  # noqa: PLC0415 - imported by _warm_up already

            record = self._storage.metadata.get_memory(self._qname)
            self._config = MemoryConfig.from_dict(record["config"])
            self._owner = self._storage.metadata.take_ownership(self._qname)  # before the log is read
            phases.lap("registry")
            self._ckpts = Checkpoints(self._storage, self._qname)
            recorded = self._storage.metadata.history(self._qname, HISTORY_CAP)
            # Writes answered before: the history's (those recorded before write records were
            # kept), then the write records (the newest, with their answers).
            applied = [(request_id, None, fingerprint) for request_id, fingerprint in applied_in_history(recorded)]
            applied += [(w["request_id"], w["answer"], w["fingerprint"])
                        for w in self._storage.metadata.recent_writes(self._qname)]
            rec = recover(self._storage, self._qname, self._config, self._spec.settings.remembered_requests,
                          ckpts=self._ckpts, phases=phases,
                          history_after=recorded[-1]["step"] if recorded else 0,
                          applied=applied, owner=self._owner)
            self._results = rec.results
            self._mark_forgotten(self._storage.metadata.forgotten_writes(self._qname))
            self._mem = rec.memory
            self._seq = rec.seq or 0
            self._history = History(self._storage, self._qname, parse_retention(self._spec.settings.history_retention),
                                    self._owner)
            self._prev_auto = rec.autos[-1] if rec.autos else None
            self._prev_auto_seq = int((self._prev_auto or {}).get("seq", 0))
            self._latest_auto = self._prev_auto
            for result, texts, domain, request_id, fingerprint in rec.unrecorded:  # answered, not yet in the history
                self._record(result, texts, domain, request_id, fingerprint)
            with self._ckpt_lock:
                if rec.checkpoint_step is None or rec.fell_back or rec.seq is None:
                    # The initial checkpoint, the first after a crash, a good one again after
                    # the newest turned out unusable, or the first with a log position.
                    self._auto_checkpoint()
                else:
                    self._writes_since = rec.replayed
                if self._history.base() is None:  # history starts: at genesis, or at the state
                    # the memory began from (a fork's or an image's first checkpoint, at log
                    # position 0) or was found in (a memory from before log positions)
                    began_from_copy = rec.seq == 0 and bool(rec.checkpoint_step)
                    self._history.start(self._latest_auto if rec.seq is None or began_from_copy else None)
            phases.lap("initial_checkpoint")
            self._sync_stats()
            phases.lap("stats")
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="checkpointer", daemon=True)
            self._checkpointer.start()
            self._started = True
            self._resume_jobs()
            log.info("memory %s up at step %s (replayed %s WAL entries)",
                     self._qname, self._mem.step, rec.replayed)
            return {**self._summary(), "replayed": rec.replayed, "was_warm": was_warm,
                    "timings": phases.as_dict()}

    def identity(self) -> dict:
        """Which memory this actor serves (None: a spare), whether it has started, and the code
        it runs (actors/code_id.py)."""
        return {"qname": self._qname, "started": self._started, "warm": self._warm, "code": CODE_ID}

    def ping(self) -> bool:
        """True once start() has finished (False once superseded: the supervisor's start()
        then fails and it replaces this actor)."""
        return self._started and not self._superseded

    def where(self) -> dict:
        """Node and process of this actor (placement tests, USS benchmarks)."""
        import ray  # noqa: PLC0415

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def prepare_hibernate(self, save: bool = True) -> dict:
        """Refuse new writes and stop checkpointing; the supervisor releases or kills the actor
        next. Unsaved writes stay in the WAL (replayed on wake) unless there are at least
        `wal_tail_writes` of them or `wal_tail_observations` observations in them: then they
        are checkpointed, so wake-ups stay quick (unless not `save`: a deleted memory)."""
        mem = self._ready()
        self._stop_job()  # a running forget job resumes when the memory wakes
        with self._ckpt_lock:
            with self._write_lock:
                self._closing = True
                self._settle()  # a failed write leaves the log before the tail is kept as it is
            with self._applied:  # writes waiting for a predecessor stop waiting: refused, retried
                self._applied.notify_all()
            if save and self._tail_too_long():
                self._auto_checkpoint()
            self._stop.set()
            self._wake.set()
        self.flush_records()
        return {"step": mem.step}

    def flush_records(self, timeout: float = 30.0) -> bool:
        """Wait until the stats and history of every answered write are written; Unavailable
        (retry) if they are not within `timeout` seconds (the metadata store away that long)."""
        try:
            self._recorder.submit(lambda: None).result(timeout)
        except FutureTimeout:
            raise Unavailable(f"the records of memory {shown(self._qname)} are still being written (the metadata "
                              f"store has not answered for {timeout:g} s); nothing was changed, retry") from None
        return True

    # ---- writes -----------------------------------------------------------------------------

    def observe(self, request_id: str, vectors: Any, texts: list[str], domain: str | None = None,
                learning_rate: float | None = None, after: str | None = None,
                after_wait: float | None = None) -> dict:
        """Log, apply and acknowledge one write. A repeated `request_id` returns the first result.
        `after`: the request id of a write that must be applied before this one, so a client may
        keep several writes in flight (their encoding overlaps the apply) and still have them
        applied in its order; this one waits for it up to `after_wait` seconds (None:
        NMEM_ORDERED_WRITE_WAIT_SECONDS; the control plane, which waits itself, sends 0: a
        wait here holds one of the actor's call slots)."""
        self._ready()
        fingerprint = write_fingerprint(texts, domain, learning_rate)
        if self._applied_before(request_id):
            return self._repeat(request_id, fingerprint)
        array = check_observation(vectors, texts, domain, learning_rate, self._config.dim)
        if after is not None:
            self._wait_until_applied(after, self._spec.settings.ordered_write_wait_seconds
                                     if after_wait is None else after_wait)
        try:
            return self._observe(request_id, fingerprint, array, texts, domain, learning_rate)
        finally:
            with self._applied:
                self._applied.notify_all()

    def _wait_until_applied(self, request_id: str, wait: float) -> None:
        """Until write `request_id` is applied (or the memory closes: the write lock's check then
        refuses this write as Unavailable). OutOfOrder if it is not applied within `wait` s."""
        with self._applied:
            if self._applied.wait_for(lambda: self._applied_before(request_id) or self._closing, wait):
                return
        raise out_of_order(request_id, self._qname, wait)

    def has_applied(self, request_id: str) -> bool:
        """Whether write `request_id` is applied (or was, before a forget took from it): the
        control plane asks before it sends a write that must follow it (cluster.ordering)."""
        self._ready()
        return self._applied_before(request_id)

    def _observe(self, request_id: str, fingerprint: str, array: np.ndarray, texts: list[str],
                 domain: str | None, learning_rate: float | None) -> dict:
        with self._write_lock:
            self._check_open()
            if self._applied_before(request_id):  # the same request raced itself
                return self._repeat(request_id, fingerprint)
            self._settle()
            mem, before, applying, seq = self._mem, self._mem.step, False, self._seq + 1
            entry = make_entry(before + len(texts), array, texts, domain, learning_rate, request_id, seq)
            try:
                # Logged before it is applied: a read (which takes no lock) never sees a write
                # that is not in the log. (Appending beside the update measured no faster here.)
                self._append(entry)
                self._seq = seq
                applying = True
                raw = mem.observe_vectors(array, texts, domain=domain, learning_rate=learning_rate)
            except Superseded:  # nothing was logged; what is logged at `seq` is the successor's
                raise
            except Exception:
                # Not acknowledged, so it must not stay in the log (nor half in the weights).
                self._unsettled = (before, applying, seq)
                self._settle_now()
                raise
            result = {**raw, "weight_hash": mem.weight_hash}
            self._results.put(request_id, result, fingerprint)
            self._record(result, texts, domain, request_id, fingerprint)
            with self._count_lock:
                self._writes_since += 1
            due = self._checkpoint_due()
        if due:
            self._wake.set()
        return result

    def consolidate(self) -> dict:
        """Log a consolidate entry, consolidate, then checkpoint at once (no checkpoint while a
        forget job runs: the log entry is enough to redo it)."""
        self._ready()
        with self._ckpt_lock, self._write_lock:
            self._check_open()
            self._settle()
            before = self._mem.step
            seq = self._log_marker(CONSOLIDATE)
            try:
                result = self._mem.consolidate()
            except Exception:
                self._unsettled = (before, True, seq)
                self._settle_now()
                raise
            if self._job is None:
                self._auto_checkpoint(barrier=True)
            self._sync_stats()  # listings show the consolidated weights' hash, not the last write's
            return result

    def _log_marker(self, kind: str, step: int | None = None, **fields: Any) -> int:
        """Append a log entry for a change that is not an observation (caller holds
        `_write_lock`); `step` is the memory's step after it. Returns its seq."""
        seq = self._seq + 1
        step = self._mem.step if step is None else step
        self._append(make_marker(kind, seq, step, **fields))
        self._seq = seq
        return seq

    def _append(self, entry: dict) -> None:
        """Log `entry` as this memory's owner."""
        with self._as_owner():
            self._storage.metadata.wal_append(self._qname, entry, owner=self._owner)

    @contextmanager
    def _as_owner(self) -> Iterator[None]:
        """Around a write that carries the fencing token: once one is refused (a successor has
        taken the memory: this process was killed or given up for dead, yet still ran this
        call), the actor serves nothing more: its state lacks what the successor logged since."""
        try:
            yield
        except Superseded:
            self._give_up()
            raise

    def _give_up(self) -> None:
        log.warning("memory %s was taken over by a newer actor; this one stops serving it", self._qname)
        self._superseded = self._closing = True
        self._stop.set()  # no checkpoint of a state that is no longer the memory's
        self._wake.set()
        self._job_cancel.set()  # a forget job stops at its next step; the successor resumes it
        with self._applied:  # writes waiting for a predecessor are refused now, and retried
            self._applied.notify_all()

    def _confirm_owner(self) -> None:
        """Before work that is not one fenced write (a checkpoint, a fork's source, a forget
        job): Superseded, and this actor stops serving, if another has taken the memory."""
        self._check_owner()
        with self._as_owner():
            self._storage.metadata.check_owner(self._qname, self._owner)

    def checkpoint(self, tag: str, description: str = "") -> dict:
        """Save the current state under a user tag (CheckpointConflict if the tag exists)."""
        self._ready()
        try:
            self._ckpts.get(tag)
            taken = True
        except CheckpointNotFound:
            taken = False
        if taken:  # checked first, so no tag entry is logged for it
            from errors import CheckpointConflict  # noqa: PLC0415

            raise CheckpointConflict(f"checkpoint tag {tag!r} already exists for memory {shown(self._qname)}")
        with self._write_lock:
            self._settle()
            seq = self._log_marker(TAG, tag=tag)
            parts, step, weight_hash = to_parts(self._mem), self._mem.step, self._mem.weight_hash
        return self._ckpts.save(parts, tag=tag, step=step, weight_hash=weight_hash, description=description, seq=seq)

    def restore(self, tag: str) -> dict:
        """Load checkpoint `tag` into this memory, then make it the recovery point."""
        self._ready()
        info, restored = self._load_tag(tag)  # outside the locks: a load takes a while
        with self._ckpt_lock, self._write_lock:
            self._check_open()
            if self._ckpts.get(tag).get("object_key") != info.get("object_key"):
                # Rewritten meanwhile (a forget rebuilt the tag without what it forgot): never
                # install the state it replaced.
                info, restored = self._load_tag(tag)
            self._settle()
            before = self._mem.step
            self._log_marker(RESTORE, restored.step, tag=tag, tag_seq=int(info.get("seq", -1)))
            self._mem = restored
            # Barrier: the new auto-checkpoint holds the restored state and the WAL before it
            # is archived (no checkpoint while a forget job runs: the log entry redoes it).
            if self._job is None:
                self._auto_checkpoint(barrier=True)
            self._sync_stats()
            return {
                "restored": True,
                "weight_hash": restored.weight_hash,
                "learning_since_checkpoint": abs(before - int(info["step"])),
            }

    def _load_tag(self, tag: str) -> tuple[dict, NeuralMemory]:
        """(index entry, state) of user checkpoint `tag`, of a config this memory can take."""
        info = self._ckpts.get(tag)
        try:
            restored = self._ckpts.load(info)
        except (CheckpointCorrupt, CheckpointNotFound) as exc:  # name the tag, not the path
            log.error("checkpoint %s of %s cannot be loaded: %s", tag, self._qname, exc)
            raise CheckpointCorrupt(f"checkpoint {tag!r} of memory {shown(self._qname)} is "
                                    "damaged or missing in the checkpoint store; restore another "
                                    "tag") from None
        restored.config.require_compatible(self._config)
        return info, restored

    def snapshot(self) -> dict:
        """An auto-checkpoint holding the current state (reused if nothing changed): fork's source."""
        self._ready()
        self._confirm_owner()  # else a fork could start from a state older than the memory's
        with self._ckpt_lock:
            if self._writes_since > 0 or self._latest_auto is None or "seq" not in self._latest_auto:
                self._auto_checkpoint()
            return dict(self._latest_auto)

    def save_for_stop(self) -> bool:
        """A graceful stop's save, by hibernation's rule: a tail longer than a wake-up replays
        quickly is checkpointed; a short one stays in the WAL (a fork that learned a little costs
        its log on every restart, not a new ~5 MB head). Whether it checkpointed."""
        self._ready()
        with self._ckpt_lock:
            with self._write_lock:
                self._settle()  # a failed write leaves the log before a tail is kept as it is
            if not self._tail_too_long():
                return False
            self._confirm_owner()  # a superseded actor's state is no longer the memory's
            self._auto_checkpoint()
            return True

    # ---- reads ------------------------------------------------------------------------------

    def surprise(self, vector: Any, text: str) -> dict:
        vector = self._vector(vector)
        with self._reading() as mem:
            return mem.surprise_vector(vector, text)

    def infer(self, vector: Any, top_k: int = 5, temperature: float | None = None,
              max_tokens: int | None = None) -> dict:
        vector = self._vector(vector)
        with self._reading() as mem:
            return mem.infer_vector(vector, top_k=top_k, temperature=temperature, max_tokens=max_tokens)

    def attention_map(self, vector: Any) -> list[dict]:
        vector = self._vector(vector)
        with self._reading() as mem:
            return mem.attention_map_vector(vector)

    def explain(self, top_k: int = 5) -> list[dict]:
        with self._reading() as mem:
            return mem.explain(top_k=top_k)

    def stats(self) -> dict:
        with self._reading() as mem:
            saved = self._latest_auto  # size of the newest auto-checkpoint: what an image weighs
            return {**mem.stats(), "weight_hash": mem.weight_hash, "step": mem.step,
                    "size_mb": round(saved["size"] / 1e6, 3) if saved else None}

    # ---- internals --------------------------------------------------------------------------

    def _bind(self, qname: str | None) -> None:
        """Take memory `qname` until release(); refuse a second, different one meanwhile."""
        if qname is not None and self._qname is not None and qname != self._qname:
            # Unavailable (a race the caller retries), not naming the memory it serves: that one
            # may be another tenant's.
            raise Unavailable(f"the actor picked for memory {shown(qname)} serves another memory; retry")
        if self._qname is None and qname is None:
            raise InvalidInput("a spare memory actor needs the name of the memory to start")
        self._qname = self._qname or qname

    def _warm_up(self, phases: Phases) -> None:
        """Imports and storage connections (idempotent; caller holds `_start_lock`)."""
        if self._warm:
            return
        import torch  # noqa: PLC0415 - ~2 s: why spares exist
        from memory import MemoryConfig, NeuralMemory  # noqa: F401, PLC0415
        from storage import open_storage  # noqa: PLC0415

        torch.set_num_threads(max(1, self._spec.settings.torch_threads))
        keep_freed_buffers()  # a write's fresh weight tensors stop faulting pages in (allocator.py)
        phases.lap("imports")
        self._storage = open_storage(self._spec.storage)
        phases.lap("open_storage")
        self._warm = True

    def _ready(self) -> NeuralMemory:
        self._check_owner()
        if not self._started:
            raise Unavailable(f"memory {shown(self._qname)} is still starting; retry")
        return self._mem

    @contextmanager
    def _reading(self) -> Iterator[NeuralMemory]:
        """The memory for a read, as the newest answered write left it: no write is being
        applied meanwhile, and one that failed after it touched the weights is undone first.
        Not under `_write_lock`."""
        while True:
            with self._write_lock.shared():
                mem = self._ready()
                if self._unsettled is None or not self._unsettled[1]:
                    yield mem
                    return
            with self._write_lock:
                try:
                    self._settle()
                except NeuralMemoryError as exc:
                    raise Unavailable(f"memory {shown(self._qname)} is undoing a write that could not be "
                                      f"logged ({exc}); retry") from None

    def _check_open(self) -> None:
        self._check_owner()
        if self._closing:
            raise Unavailable(f"memory {shown(self._qname)} is hibernating; retry")

    def _check_owner(self) -> None:
        if self._superseded:
            raise self._superseded_error()

    def _superseded_error(self) -> Superseded:
        return superseded(self._qname, "retry")

    def _applied_before(self, request_id: str) -> bool:
        return request_id in self._results or request_id in self._forgotten_writes

    def _repeat(self, request_id: str, fingerprint: str) -> dict:
        """Result of a write already applied (before a crash, it may only be known by its id),
        marked `repeated`: the caller learns that nothing was applied this time.
        RequestIdReused if that write was another one (where its content is still known; never
        for a write a forget took from: 409 or not would tell whether a guess of it was right)."""
        forgotten = request_id in self._forgotten_writes
        known = None if forgotten else self._results.fingerprint(request_id)
        if known is not None and known != fingerprint:
            raise RequestIdReused(f"request_id {request_id!r} already named another write to memory "
                                  f"{shown(self._qname)} (other texts, domain or learning rate); "
                                  "nothing of this one was applied. A retry must repeat its write exactly; "
                                  "give a new write a new request_id")
        return {**self._first_answer(request_id, fingerprint, forgotten), "repeated": True}

    def _first_answer(self, request_id: str, fingerprint: str, forgotten: bool) -> dict:
        """What write `request_id` answered when it was applied (`_repeat`)."""
        result = self._results.get(request_id)
        mem = self._ready()
        if result is None or "weight_hash" not in result:
            # Applied before the newest checkpoint (only its id and fingerprint survived), or
            # replayed after a restart (no hash: hashing every replayed step would slow every
            # wake-up): the history holds its whole answer.
            self.flush_records()
            recorded = result_from_history(self._storage.metadata.history(self._qname, HISTORY_CAP), request_id)
            if recorded is not None:
                self._results.put(request_id, recorded, None if forgotten else fingerprint)
                return recorded
        if result is None:  # older than the history keeps: only its id survived
            return {"surprise": 0.0, "surprises": [], "weight_delta": 0.0, "patterns_activated": [],
                    "step": mem.step, "weight_hash": mem.weight_hash}
        return {"weight_hash": mem.weight_hash, **result}  # the newest write's, almost always

    def _vector(self, vector: Any) -> np.ndarray:
        dim = self._config.dim
        try:
            array = np.array(vector, dtype=np.float32, copy=True).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"vector must be numeric with {dim} values: {exc}") from exc
        if array.shape != (dim,) or not np.isfinite(array).all():
            raise InvalidInput(f"vector must have {dim} finite values, got shape {array.shape}")
        return array

    def _record(self, result: dict, texts: list[str], domain: str | None, request_id: str | None,
                fingerprint: str) -> None:
        """Queue the stats and history of a write (one round trip, on the recorder thread)."""
        history = history_items(result, texts, request_id, fingerprint)
        write = write_record(request_id, result, fingerprint) if request_id else None
        self._recorder.submit(self._write_record, self._qname, step=int(result["step"]),
                              weight_hash=result["weight_hash"],
                              observations=len(texts), domains=[domain] if domain else [], history=history,
                              write=write, writes_cap=self._spec.settings.remembered_requests)

    def _sync_stats(self) -> None:
        """Point the Redis stats at the memory's real step and hash (after recovery or restore);
        listings report the step as the observation count, so they agree with the actor."""
        self._recorder.submit(self._write_record, self._qname, step=self._mem.step,
                              weight_hash=self._mem.weight_hash)

    def _write_record(self, qname: str, **record: Any) -> None:
        """Write one record, retrying while Redis is away (a record is applied once however
        often it is sent, storage/scripts.py RECORD_WRITE): a dropped one would leave a gap in
        the history an idempotent retry of its write is answered from."""
        for delay in (*RECORD_RETRY_DELAYS, None):
            try:
                self._storage.metadata.record_write(qname, **record)
                return
            except MetadataError as exc:
                if delay is None:  # the write itself is durable: this is only its view
                    log.warning("stats/history of %s not updated: %s", qname, exc)
                    return
                time.sleep(delay)
            except NeuralMemoryError as exc:  # e.g. the memory was deleted meanwhile
                log.warning("stats/history of %s not updated: %s", qname, exc)
                return

    def _summary(self) -> dict:
        mem = self._mem
        return {"step": mem.step, "weight_hash": mem.weight_hash,
                "weight_parameters": int(mem.stats()["weight_parameters"])}

    def _auto_checkpoint(self, *, barrier: bool = False) -> dict:
        """Write an auto-checkpoint, then archive the WAL behind it (actors/history.py). Caller
        holds `_ckpt_lock`; with `barrier` it also holds `_write_lock` (so the whole WAL may
        go). While a forget job runs the log stays as it is: only the checkpoint is written."""
        if barrier:
            data, step, weight_hash, pending, seq = self._snapshot_state()
        else:
            with self._write_lock:
                data, step, weight_hash, pending, seq = self._snapshot_state()
        info = self._ckpts.save_auto(data, step=step, weight_hash=weight_hash, seq=seq)
        with self._count_lock:
            self._writes_since -= pending
            self._last_ckpt = time.monotonic()
        self._latest_auto = info
        if self._job is not None:
            return info
        through, state = (seq, info) if barrier else (self._prev_auto_seq, self._prev_auto)
        self._history.archive_through(through, state)
        self._prev_auto_seq, self._prev_auto = seq, info
        self._ckpts.prune_autos(1 if barrier else self._spec.settings.keep_auto_checkpoints)
        return info

    def _settle(self) -> None:
        """Finish what a failed write left (caller holds `_write_lock`): drop its entry from the
        log, since it was never acknowledged, and if it got as far as the weights, rebuild them
        from checkpoint + log. Raises (e.g. MetadataError) while that cannot be done."""
        if self._unsettled is None:
            return
        step, touched, seq = self._unsettled
        with self._as_owner():
            self._storage.metadata.wal_drop(self._qname, from_seq=seq, owner=self._owner)
            if touched:
                self._mem = recover(self._storage, self._qname, self._config, 1, ckpts=self._ckpts,
                                    owner=self._owner).memory
        if touched and self._mem.step != step:
            log.error("memory %s rebuilt to step %s after a failed write at step %s",
                      self._qname, self._mem.step, step)
        self._unsettled = None
        log.warning("memory %s: a write that failed to apply was dropped from the log", self._qname)

    def _settle_now(self) -> None:
        try:
            self._settle()
        except Exception as exc:  # noqa: BLE001 - the next write (or checkpoint) tries again
            log.error("memory %s: a failed write is still in the log (%s); writes wait for it",
                      self._qname, exc)

    def _snapshot_state(self) -> tuple[dict[str, bytes], int, str, int, int]:
        self._confirm_owner()  # a checkpoint archives and trims the log, and prunes checkpoints
        self._settle()  # never save weights a failed write touched
        mem = self._mem
        return to_parts(mem), mem.step, mem.weight_hash, self._writes_since, self._seq

    def _unsaved_observations(self) -> int:
        """Observations learned since the newest auto-checkpoint: what a wake-up would replay
        (a batch write is one write but many observations)."""
        saved = (self._latest_auto or {}).get("step")
        return max(0, self._mem.step - int(saved)) if saved is not None else self._mem.step

    def _tail_too_long(self) -> bool:
        """Whether the unsaved WAL tail costs more to replay than a checkpoint costs to write."""
        return self._writes_since > 0 and not self._tail_fits(self._writes_since, self._unsaved_observations())

    def _tail_fits(self, writes: int, observations: int) -> bool:
        """Whether a WAL tail of `writes` writes holding `observations` observations is kept as
        a log (replayed when the memory wakes) rather than saved in a new checkpoint."""
        spec = self._spec.settings
        return writes < spec.wal_tail_writes and observations < max(1, spec.wal_tail_observations)

    def _checkpoint_due(self) -> bool:
        spec = self._spec.settings
        with self._count_lock:
            if self._writes_since <= 0 or self._job is not None:
                return False
            # A short tail is cheaper to replay than to checkpoint (a new head per memory).
            return (self._writes_since >= spec.checkpoint_every_writes
                    or self._unsaved_observations() >= spec.checkpoint_every_observations
                    or (self._tail_too_long()
                        and time.monotonic() - self._last_ckpt >= spec.checkpoint_every_seconds))

    def _checkpoint_loop(self) -> None:
        period = max(0.05, min(self._spec.settings.checkpoint_every_seconds / 4, 5.0))
        while not self._stop.is_set():
            self._wake.wait(period)
            self._wake.clear()
            if self._stop.is_set() or not self._checkpoint_due():
                continue
            with self._ckpt_lock:
                if self._closing or not self._checkpoint_due():
                    continue
                try:
                    self._auto_checkpoint()
                except NeuralMemoryError as exc:  # storage down: the WAL still holds every write
                    log.error("auto-checkpoint of %s failed: %s", self._qname, exc)
                    self._stop.wait(1.0)
