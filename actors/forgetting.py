"""Forget jobs in a memory's actor (mixed into MemoryActor): start, run, resume, report.

    job = actor.forget_start(job_id, {"selector": {"text": "..."}, "mode": "exact", ...})
    actor.forget_status(job_id)    # {status: pending|running|done|failed, progress, report, ...}

A job runs on its own thread while the memory keeps serving reads *and* writes:
- it notes the log position `cut`, reads the kept history up to it, replays it from the
  newest state older than the first selected item without the selected items
  (actors/forget.py), and stages the new objects (checkpoint, rebuilt tags, log segments);
- meanwhile observes are logged and applied to the live memory as usual; consolidate and
  restore are logged but write no barrier checkpoint, and no auto-checkpoint or log trim
  happens (the log after `cut` must stay where the job finds it);
- at the swap it takes the write lock, replays the tail logged since `cut` (dropping selected
  items there too), and commits everything in one Redis script (storage/history.py): only
  observes arriving during that tail replay and commit wait.

Crash safety: until the commit, the old state is the recovery point (the job's staged objects
are listed in its record and deleted on retry); a job found running when the actor starts is
run again from scratch. After the commit, the objects that held the forgotten data are listed
in the job record and deleted; a restart finishes that too. Approximate mode (no history
needed) and the erasure of everything else are in actors/erasure.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from errors import Busy, InvalidInput, NeuralMemoryError, NotFound, RequestIdReused, Superseded

from actors.durability import from_parts
from actors.erasure import Erasure
from actors.forget import NotExact, Rebuild, Selector, choose_start, scan
from storage import is_fork_of, shown

__all__ = ["Forgetting"]

log = logging.getLogger(__name__)

MODES = ("exact", "approximate")
TAG_POLICIES = ("rebuild", "delete")
PROGRESS_EVERY = 1.0  # seconds between progress writes


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


START_FIELDS = ("mode", "dry_run", "selection", "checkpoints", "forks")  # what a retried start repeats


def _same_start(job: dict, retry: dict, still_selects: Callable[[], bool]) -> dict:
    """`job`, if `retry` (a start under its id: the same Idempotency-Key) asks for the same;
    RequestIdReused if it asks for something else. Texts are compared while the job holds them
    (until it ends), by digest for a dry run (it forgets nothing, and its report lists them);
    a finished forget keeps neither, so a retry naming texts the memory still holds
    (`still_selects`) is not the forget that finished: told so, not "done"."""
    differs = [k for k in START_FIELDS if job.get(k) != retry.get(k)]
    if job.get("selector") is not None and job["selector"] != retry["selector"]:
        differs.append("texts")
    elif job.get("dry_run") and job.get("selector_digest") not in (None, retry.get("selector_digest")):
        differs.append("texts")
    elif job["status"] == "done" and not job.get("dry_run") and retry["selection"]["kind"] in ("text", "texts") \
            and not differs and still_selects():
        raise RequestIdReused(f"forget job {job['job_id']} was started under this key and is done, but the "
                              "memory still holds what this request selects: it is another forget, or what it "
                              "names was learned again since. Give it its own Idempotency-Key")
    if differs:
        raise RequestIdReused(f"forget job {job['job_id']} was started under this key with other "
                              f"{', '.join(differs)}; give another forget its own Idempotency-Key")
    return job


def _digest(selector: dict) -> str:
    return hashlib.sha256(json.dumps(selector, sort_keys=True).encode()).hexdigest()


class Cancelled(Exception):
    """The job was stopped (the memory hibernates); it runs again when the memory wakes."""


class Forgetting(Erasure):
    """Relies on MemoryActor's storage, locks, `_mem`, `_seq`, `_ckpts`, `_history`, `_qname`."""

    _job: dict | None
    _job_thread: threading.Thread | None
    _cleanups: list[threading.Thread]
    _job_cancel: threading.Event

    # ---- calls ---------------------------------------------------------------------------------

    def forget_start(self, job_id: str, request: dict) -> dict:
        """Validate and start a forget job (Busy while another one runs)."""
        self._ready()
        selector = Selector.from_dict(request.get("selector") or {})
        mode = request.get("mode", "exact")
        policy = request.get("checkpoints", "rebuild")
        if mode not in MODES or policy not in TAG_POLICIES:
            raise InvalidInput(f"mode must be one of {MODES} and checkpoints one of {TAG_POLICIES}")
        job = {"job_id": job_id, "memory": shown(self._qname), "status": "pending", "mode": mode,
               "dry_run": bool(request.get("dry_run", False)), "exact": None,
               "selection": selector.describe(), "selector": selector.to_dict(), "forgotten": 0,
               "weight_hash": None, "progress": 0.0, "created_at": now_iso(), "finished_at": None,
               "who": request.get("who") or {}, "checkpoints": policy, "forks": bool(request.get("forks")),
               "base": request.get("base"), "parent_job": request.get("parent_job"),
               "staged": [], "cleanup": [], "report": None, "error": None}
        if job["dry_run"]:
            job["selector_digest"] = _digest(job["selector"])

        def still_selects() -> bool:
            from memory.unlearn import matching_records  # noqa: PLC0415

            return bool(matching_records(self._mem, selector.matches))

        with self._write_lock:
            self._check_open()
            if self._job is not None:
                if self._job["job_id"] == job_id:
                    return self._public(_same_start(self._job, job, still_selects))
                raise Busy(f"forget job {self._job['job_id']} is running on this memory; retry when it "
                           "is done")
            existing = self._storage.metadata.job_get(self._qname, job_id)
            if existing is not None:  # a retried start
                return self._public(_same_start(existing, job, still_selects))
            if mode == "approximate" and selector.kind == "steps":
                self._check_steps_not_renumbered()
            self._confirm_owner()  # a job accepted by a superseded actor would be left running
            job["cut"] = self._seq  # the log it replays ends here; later writes are its tail
            self._storage.metadata.job_put(self._qname, job)
            self._launch(job)
        return self._public(job)

    def _check_steps_not_renumbered(self) -> None:
        """An approximate forget selects by the steps the memory's records hold now; after an
        exact forget removed observations, later ones hold renumbered steps, no longer the ones
        observe answered (the exact mode reads those from the log: actors/wal.py answered_steps)."""
        for earlier in self._storage.metadata.jobs(self._qname):
            if earlier.get("status") == "done" and earlier.get("exact") and not earlier.get("dry_run") \
                    and earlier.get("forgotten"):
                raise InvalidInput(f"forget job {earlier['job_id']} removed observations from this memory, so "
                                   "the steps after them were renumbered and no longer match what observe "
                                   "answered: forget by steps with mode \"exact\", or select by text or "
                                   "domain (a dry run lists them)")

    def forget_status(self, job_id: str) -> dict:
        self._ready()
        job = self._storage.metadata.job_get(self._qname, job_id)
        if job is None:
            from errors import NotFound  # noqa: PLC0415

            raise NotFound(f"no forget job {job_id!r} for memory {shown(self._qname)}")
        return self._public(job)

    @staticmethod
    def _public(job: dict) -> dict:
        """The job as callers see it: never the selector's texts, nor internal bookkeeping.
        A committed job whose old objects are still being deleted is "running" until they are
        gone: "done" promises that no stored object holds the forgotten data any more."""
        hidden = ("selector", "selector_digest", "staged", "cleanup", "cleanup_chunks", "commit_time", "base", "cut")
        public = {k: v for k, v in job.items() if k not in hidden}
        if job["status"] == "done" and (job.get("cleanup") or job.get("cleanup_chunks")):
            public.update(status="running", progress=0.99)
        return public

    # ---- lifecycle -----------------------------------------------------------------------------

    def _launch(self, job: dict) -> None:
        """Run `job` on a thread (caller holds `_write_lock`)."""
        job["attempts"] = job.get("attempts", 0) + 1  # > 1: resumed after a crash or hibernation
        self._job = job
        self._job_cancel = threading.Event()
        self._job_thread = threading.Thread(target=self._job_main, args=(job,), name="forget", daemon=True)
        self._job_thread.start()

    def _resume_jobs(self) -> None:
        """At start: finish the cleanup of committed jobs, run again the ones a crash stopped."""
        for job in self._storage.metadata.jobs(self._qname):
            if job["status"] == "done" and (job.get("cleanup") or job.get("cleanup_chunks")):
                # in the background: it may wait for another collection to finish
                cleanup = threading.Thread(target=self._finish_cleanup, args=(job,), name="forget-cleanup", daemon=True)
                self._cleanups.append(cleanup)
                cleanup.start()
            elif job["status"] in ("pending", "running"):
                self._delete_objects(job.get("staged", []))
                job.update(staged=[], status="pending", progress=0.0, cut=None)  # cut: the log's end now
                with self._write_lock:
                    if self._job is None:
                        log.warning("memory %s: resuming forget job %s", self._qname, job["job_id"])
                        self._launch(job)

    def _stop_job(self) -> None:
        """Stop a running job before the memory hibernates (it resumes when it wakes)."""
        thread = self._job_thread
        if thread is not None and thread.is_alive():
            self._job_cancel.set()
            thread.join(timeout=60)

    def _forget_work_running(self) -> bool:
        """Whether a job or a clean-up thread of this memory still runs: one waiting for the
        collector lock outlives _stop_job, and it writes to whatever memory `_qname` names when
        it ends, so the process must not serve another memory (release refuses: it is killed)."""
        threads = [self._job_thread, *self._cleanups]
        return any(thread is not None and thread.is_alive() for thread in threads)

    def _job_main(self, job: dict) -> None:
        try:
            job.update(status="running", started_at=now_iso())
            self._storage.metadata.job_put(self._qname, job)
            selector = Selector.from_dict(job["selector"])
            if job["mode"] == "approximate":
                self._forget_approximately(job, selector)
            else:
                self._forget_exactly(job, selector)
        except Cancelled:
            log.warning("memory %s: forget job %s stopped; it resumes when the memory wakes (unless it was deleted)",
                        self._qname, job["job_id"])
        except Superseded:  # not failed: the actor that took the memory resumes it
            log.warning("memory %s: forget job %s left to the actor that took the memory",
                        self._qname, job["job_id"])
        except NotExact as exc:
            self._fail(job, "history_unavailable", f"cannot forget exactly: {exc}. Run it with "
                       "mode=\"approximate\" to erase the records and push the network away from them "
                       "(reported as approximate)")
        except Exception as exc:  # noqa: BLE001 - any failure ends the job, reported
            log.exception("memory %s: forget job %s failed", self._qname, job["job_id"])
            code = "invalid_input" if isinstance(exc, InvalidInput) else "internal"
            self._fail(job, code, str(exc) if isinstance(exc, NeuralMemoryError) else f"{type(exc).__name__}: {exc}")
        finally:
            self._release(job)

    def _release(self, job: dict) -> None:
        """This memory may take another job (before `job`'s final status is written, so a
        caller that reads "done" can start the next one)."""
        with self._write_lock:
            if self._job is job:
                self._job = None

    def _fail(self, job: dict, code: str, message: str) -> None:
        self._delete_objects(job.get("staged", []))
        self._release(job)
        job.update(status="failed", error={"code": code, "message": message}, finished_at=now_iso(),
                   selector=None, staged=[])
        try:
            self._storage.metadata.job_put(self._qname, job)
            self._storage.metadata.audit_append(self._qname.split("/", 1)[0], self._audit(job))
        except NeuralMemoryError as exc:
            log.error("memory %s: job %s failed and could not be recorded: %s", self._qname, job["job_id"], exc)

    def _progress(self, job: dict, done: int, total: int, state: dict) -> None:
        if self._job_cancel.is_set():
            raise Cancelled()
        now = time.monotonic()
        if now - state.get("at", 0.0) >= PROGRESS_EVERY:
            state["at"] = now
            job["progress"] = round(0.9 * done / max(1, total), 3)  # the swap is the last 10 %
            self._storage.metadata.job_put(self._qname, job)

    def _audit(self, job: dict) -> dict:
        """Who forgot what kind of selection, when and how: never the text. (Deleting a memory
        writes the same record for each job it stops: storage/scripts.py DELETE_MEMORY.)"""
        return {"at": now_iso(), "tenant": self._qname.split("/", 1)[0], "key": job["who"].get("key"),
                "memory": job["memory"], "job_id": job["job_id"], "selection": job["selection"],
                "mode": job["mode"], "dry_run": job["dry_run"], "exact": job["exact"],
                "forgotten": job["forgotten"], "status": job["status"],
                "error": (job.get("error") or {}).get("code")}

    # ---- exact -----------------------------------------------------------------------------------

    def _forget_exactly(self, job: dict, selector: Selector) -> None:
        if job.get("cut") is None:
            with self._write_lock:
                job["cut"] = self._seq
        cut = int(job["cut"])
        # A fork's run of its parent's job replays from the parent's replayed state instead.
        override = job.get("base")
        base = override or self._history.base()
        if base is None:
            raise NotExact("this memory was made before its history was kept")
        segments = self._history.segments()
        found = scan(self._history.events(base["seq"], cut, segments), selector,
                     own_steps=job.get("parent_job") is None)
        if override is None:
            self._check_base(base, selector, found)
        if job["dry_run"]:
            return self._finish_dry_run(job, found, base)
        if not found.matches and override is None:
            self._check_live_holds_none(selector)
            return self._finish_unchanged(job)
        first = 0 if override else found.first_seq
        start = override or choose_start(self._start_candidates(base), found, self._tag_loadable)
        job["exact"] = True
        rebuild = Rebuild(self._load_start(start, base), found.matches, self._load_tag_state,
                          keep_states={t for _, _, t in found.restores} | set(self._fork_points()),
                          held=int(override.get("held", 1)) if override else 0,  # 1: staged before counts
                          logged_step=int(self._history.base()["step"]) if override else None)
        rebuild.start_at(int(start["seq"]))
        # Segments wholly before the first selected item stay; everything logged after them
        # (rewritten, or as it was) goes into new segments, the WAL included.
        kept = [s for s in segments if s["last_seq"] < first]
        rewrite_from = max([s["last_seq"] for s in kept] + [int(base["seq"])]) + 1
        old_entries = []  # entries before the start that land in rewritten segments as they are
        total, state = max(1, cut - start["seq"]), {}
        for entry in self._history.events(min(start["seq"], rewrite_from - 1), cut, segments):
            if entry["seq"] <= start["seq"]:
                old_entries.append(entry)
                continue
            rebuild.apply(entry)
            self._progress(job, entry["seq"] - start["seq"], total, state)
        archived = [e for e in old_entries + rebuild.entries if e["seq"] >= rewrite_from]
        staged = self._stage_exact(job, rebuild, cut, archived)
        self._swap(job, selector, rebuild, cut, kept, staged, segments, start)

    def _check_base(self, base: dict, selector: Selector, found) -> None:
        """NotExact if the history base itself may hold a selected observation."""
        if base.get("object_key") is None:
            return  # genesis: nothing before the log
        memory = self._load_start(base, base)
        names = memory.domain_names
        for _record, text, step, domain in memory.store.records():
            if selector.matches(text, step, names[domain] if domain < len(names) else None):
                raise NotExact(f"the history kept for this memory starts at step {base['step']} "
                               "(retention, a fork or an image, or a memory older than kept "
                               "history), and that state already holds selected observations")
        if selector.kind == "domain" and memory.domain_counts.get(selector.domain):
            raise NotExact(f"observations of domain {selector.domain!r} predate the kept history")
        if selector.kind == "steps" and selector.steps[0] <= base["step"]:
            raise NotExact(f"the kept history starts after step {base['step']}")

    def _check_live_holds_none(self, selector: Selector) -> None:
        """Nothing selected in the log: the live memory must not hold it either."""
        memory = self._mem
        names = memory.domain_names
        for _record, text, step, domain in memory.store.records():
            if selector.kind in ("text", "texts") and selector.matches(text, step, None):
                raise NotExact("the memory holds a selected text but its log does not (it predates the "
                               "kept history)")
        if selector.kind == "domain" and memory.domain_counts.get(selector.domain):
            raise NotExact("the memory counts observations of this domain that its log does not hold")
        del names

    def _start_candidates(self, base: dict) -> list[dict]:
        """States a replay may start from: the base, auto-checkpoints and user tags with a seq."""
        infos = [c for c in self._storage.metadata.list_checkpoints(self._qname) if "seq" in c]
        return [dict(base), *(c for c in infos if int(c["seq"]) >= int(base["seq"]))]

    def _tag_loadable(self, tag: str, tag_seq: int) -> bool:
        try:
            return int(self._ckpts.get(tag).get("seq", -1)) == tag_seq
        except NeuralMemoryError:
            return False

    def _load_start(self, start: dict, base: dict):
        from memory import NeuralMemory  # noqa: PLC0415

        if start.get("object_key") is None:
            return NeuralMemory(self._config)
        return self._ckpts.load(start)

    def _load_tag_state(self, tag: str):
        return self._ckpts.load(self._ckpts.get(tag))

    def _finish_dry_run(self, job: dict, found, base: dict) -> None:
        job["exact"] = True
        job["forgotten"] = found.count
        report = {"would_forget": found.count, "observations": found.listed,
                  "listed": len(found.listed), "history_starts_at_step": base["step"],
                  "forks": self._fork_report(None)}
        self._finish(job, report, selector_kept=True)

    def _finish_unchanged(self, job: dict) -> None:
        job["exact"] = True
        # Its forks are listed all the same (whether they hold it is not known from here): an
        # earlier forget may have left the data in a fork, or a fork may have learned it itself.
        self._finish(job, {"forgotten": 0, "note": "nothing selected is in this memory",
                           "forks": self._fork_report(None)})

    def _finish(self, job: dict, report: dict, *, selector_kept: bool = False) -> None:
        job.update(status="done", progress=1.0, report=report, finished_at=now_iso(),
                   weight_hash=self._mem.weight_hash, selector=None)
        self._release(job)
        self._storage.metadata.job_put(self._qname, job)
        self._storage.metadata.audit_append(self._qname.split("/", 1)[0], self._audit(job))

    def _fork_points(self) -> dict[int, dict]:
        """Forks of this memory that recorded where they were taken: {source seq: record}."""
        return {int(r["source_seq"]): r for r in self._forks() if r.get("source_seq") is not None}

    def _forks(self) -> list[dict]:
        """Forks of this memory (not of an earlier, deleted memory of the same name)."""
        tenant, me = self._qname.split("/", 1)[0], self._storage.metadata.get_memory(self._qname)
        return [r for r in self._storage.metadata.list_memories(tenant) if is_fork_of(r, me)]

    def _fork_report(self, rebuild: Rebuild | None, job: dict | None = None) -> list[dict]:
        """Each fork of this memory: whether the state it was made from held a selected item;
        for those that did, with `job`, the replayed state at the fork point is stored as the
        fork's new history base (so the same forget on the fork can be exact)."""
        out = []
        left_behind = self._forks_left_behind() if job is not None and rebuild is not None else set()
        for record in self._forks():
            seq = record.get("source_seq")
            entry = {"name": shown(record["name"]), "source_tag": record.get("source_tag"),
                     "source_seq": seq, "contains": None}  # None: unknown (dry run, or an old fork)
            if seq is not None and rebuild is not None:
                held = rebuild.held_at.get(int(seq), 0)
                entry["contains"] = held > 0
                if entry["contains"] and job is not None and int(seq) in rebuild.states \
                        and (entry["name"], seq) not in left_behind:
                    entry["base"] = {**self._stage_fork_base(job, record["name"], rebuild.states[int(seq)]),
                                     "held": held}
            out.append(entry)
        return out

    def _forks_left_behind(self) -> set[tuple[str, Any]]:
        """(name, source seq) of forks that an earlier forget of this memory found holding its
        data and did not run on: this memory's log no longer replays to the state they were made
        from, so that replay must not become their base (it would take from them what only the
        earlier forget removed). Without a base their own run refuses, as not exact."""
        tenant = self._qname.split("/", 1)[0]
        left: set[tuple[str, Any]] = set()
        for earlier in self._storage.metadata.jobs(self._qname):
            if earlier.get("status") != "done" or earlier.get("dry_run"):
                continue
            for fork in (earlier.get("report") or {}).get("forks", []):
                if fork.get("contains") and not self._ran_on_fork(f"{tenant}/{fork['name']}", earlier["job_id"]):
                    left.add((fork["name"], fork.get("source_seq")))
        return left

    def _ran_on_fork(self, fork: str, parent_job: str) -> bool:
        try:
            return any(j.get("parent_job") == parent_job and j.get("status") == "done"
                       for j in self._storage.metadata.jobs(fork))
        except NotFound:
            return True  # the fork is gone: nothing of it to protect

    def _stage_fork_base(self, job: dict, fork: str, state: dict[str, bytes]) -> dict:
        import uuid  # noqa: PLC0415

        from storage.keys import base_key  # noqa: PLC0415

        memory = from_parts(state)
        key = base_key(fork, 0, uuid.uuid4().hex[:12])
        stored = self._storage.content.write(key, state)
        self._note_staged(job, [key])
        return {"seq": 0, "step": memory.step, "object_key": key, "sha256": stored["sha256"],
                "weight_hash": memory.weight_hash}

    def _entry_time(self, at: Any) -> str:
        return datetime.fromtimestamp(float(at), timezone.utc).isoformat() if at else now_iso()
