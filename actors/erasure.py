"""Erasure everywhere a forgotten observation lives in one memory (mixed into MemoryActor).

After a replay without the selected items (actors/forgetting.py) or an approximate erasure,
this module stages and commits the new state and removes the old one:
- the live memory and a new auto-checkpoint (the only one: older ones held the data);
- user tags whose state held a selected item: rebuilt from the replayed state (default) or
  deleted (`checkpoints: "delete"`);
- the archived log: segments from the first selected item on are written anew without it;
- the WAL: replaced by the tail logged during the job, rewritten;
- the observation history list (Redis): regenerated from the replay (approximate: the items of
  the erased texts removed); stats and domains to match;
- every object that held the data (old checkpoints, tags, segments, base copies) is deleted
  right after the commit, and listed in the report.
The commit is one Redis script; the objects it names are written before it and the old ones
deleted after it (listed in the job record, so a crash in between is finished on restart).
"""

from __future__ import annotations

import logging

from storage.keys import SEGMENT_SUFFIX
from storage.metadata import HISTORY_CAP, cut_history_text

from actors.durability import from_parts, to_parts
from actors.forget import Rebuild, Selector, scan
from actors.wal import OBSERVE, RecentResults, entry_kind, write_record

__all__ = ["Erasure"]

log = logging.getLogger(__name__)

SEGMENT_ENTRIES = 256  # entries per rewritten log segment
CLEANUP_RETRY_SECONDS = 5.0  # between tries of a sweep that could not run (after its own wait)


class Erasure:
    """Relies on MemoryActor's fields and on Forgetting's helpers."""

    # ---- exact: stage, swap ------------------------------------------------------------------

    def _stage_exact(self, job: dict, rebuild: Rebuild, cut: int, archived: list[dict]) -> dict:
        """Write the new objects (not indexed yet); their keys go into the job record first."""
        memory, fork_base = rebuild.memory, job.get("base")
        if fork_base and self._tail_fits(sum(entry_kind(entry) == OBSERVE for entry in rebuild.entries),
                                         memory.step - int(fork_base["step"])):
            # A fork's run that replayed a short log of its own keeps it as a log over its new
            # base (whose chunks it shares with its siblings), as a hibernated fork would: a
            # new checkpoint is a new ~5 MB head per fork. The WAL then holds the whole log.
            auto = self._ckpts.copy_object(fork_base, tag=self._ckpts.next_auto_tag())
        else:
            auto = self._ckpts.put_object(to_parts(memory), tag=self._ckpts.next_auto_tag(), step=memory.step,
                                          weight_hash=memory.weight_hash, description="auto", seq=cut)
        staged = {"auto": auto, "tags": {}, "deleted_tags": [], "segments": []}
        self._note_staged(job, [auto["object_key"]])
        self._stage_tags(job, rebuild, staged, lambda seq: seq <= cut)
        if self._history.retention != 0.0:
            for i in range(0, len(archived), SEGMENT_ENTRIES):
                segment = self._history.write_segment(archived[i : i + SEGMENT_ENTRIES])
                staged["segments"].append(segment)
                self._note_staged(job, [segment["key"]])
        return staged

    def _stage_tags(self, job: dict, rebuild: Rebuild, staged: dict, within) -> None:
        """Rebuild (or mark for deletion) each user tag taken while the old state held an item."""
        for info in self._user_tags():
            seq = info.get("seq")
            if seq is None or not within(int(seq)) or not rebuild.held_at.get(int(seq)):
                continue
            if job["checkpoints"] == "delete":
                staged["deleted_tags"].append(info)
                continue
            state = from_parts(rebuild.states[int(seq)])
            new = self._ckpts.put_object(rebuild.states[int(seq)], tag=info["tag"], step=state.step,
                                         weight_hash=state.weight_hash, description=info.get("description", ""),
                                         seq=int(seq))
            staged["tags"][info["tag"]] = {**new, "created_at": info.get("created_at"), "old": info}
            self._note_staged(job, [new["object_key"]])

    def _user_tags(self) -> list[dict]:
        from actors.durability import is_auto  # noqa: PLC0415

        return [c for c in self._storage.metadata.list_checkpoints(self._qname) if not is_auto(c["tag"])]

    def _note_staged(self, job: dict, keys: list[str]) -> None:
        job["staged"] = job.get("staged", []) + keys
        self._storage.metadata.job_put(self._qname, job)

    def _swap(self, job: dict, selector: Selector, rebuild: Rebuild, cut: int, kept: list[dict],
              staged: dict, old_segments: list[dict], start: dict) -> None:
        """Replay the tail logged since `cut`, commit, switch the live memory, clean up."""
        with self._ckpt_lock, self._write_lock:
            self._settle()  # a failed write still in the log must not be replayed into the result
            tail = list(self._history.events(cut, None, []))
            rebuild.matches.update(scan(tail, selector, own_steps=job.get("parent_job") is None).matches)
            for entry in tail:
                rebuild.apply(entry)
            self._stage_tags(job, rebuild, staged, lambda seq: seq > cut)
            self.flush_records()
            meta = self._storage.metadata
            old_autos = self._ckpts.autos()
            tail_entries = [e for e in rebuild.entries if e["seq"] > cut]
            wal = [e for e in rebuild.entries if e["seq"] > int(staged["auto"]["seq"])]  # all but what it holds
            base = None
            if self._history.retention == 0.0 or job.get("base"):
                staged_base = {k: v for k, v in (job.get("base") or {}).items() if k != "held"}
                base = staged_base or self._history.copy_state(staged["auto"])
            cleanup = self._exact_cleanup(staged, old_autos, kept, old_segments, base)
            report = self._exact_report(job, rebuild, start, staged, old_autos, cleanup, len(tail_entries), kept,
                                        old_segments)
            job.update(status="done", exact=True, forgotten=rebuild.removed, progress=1.0, report=report,
                       weight_hash=rebuild.memory.weight_hash, selector=None, staged=[], cleanup=cleanup,
                       **self._old_chunks(cleanup))
            job["finished_at"] = report["finished_at"]
            plan = self._plan(job, rebuild.memory, staged, old_autos, base)
            plan["archive"] = kept + staged["segments"]
            plan["history"] = self._regenerated_history(rebuild)
            plan["stats"]["total_observations"] = max(0, self._total_observations() - rebuild.forgotten)
            plan["domains"] = self._domains_after(rebuild)
            plan["forgotten_writes"] = sorted(rebuild.forgotten_writes)
            replayed = {request_id: (result, fingerprint) for request_id, result, fingerprint in rebuild.results
                        if request_id}
            plan["writes"] = [self._write_after(w, rebuild.forgotten_writes, rebuild.forgotten_texts, replayed)
                              for w in meta.recent_writes(self._qname)]
            with self._as_owner():  # the swap is refused whole once another actor has the memory
                meta.forget_commit(self._qname, plan, wal, self._audit(job), owner=self._owner)
            self._mem = rebuild.memory
            self._results = self._rebuilt_results(rebuild, plan["writes"])
            self._mark_forgotten(rebuild.forgotten_writes)
            self._after_swap(staged["auto"], len(wal))
            self._job = None  # committed: the memory may take the next job
        self._finish_cleanup(job, rebuild.forgotten_texts)

    def _after_swap(self, auto: dict, pending_writes: int) -> None:
        """The new auto-checkpoint is the recovery point (caller holds both locks)."""
        self._latest_auto = dict(auto)
        self._prev_auto_seq = int(auto["seq"])
        with self._count_lock:
            self._writes_since = pending_writes

    def _plan(self, job: dict, memory, staged: dict, old_autos: list[dict], base: dict | None) -> dict:
        from actors.forgetting import now_iso  # noqa: PLC0415

        puts = {staged["auto"]["tag"]: {**staged["auto"], "created_at": now_iso()}}
        for tag, info in staged["tags"].items():
            puts[tag] = {k: v for k, v in info.items() if k != "old"}
        dry_runs = [j["job_id"] for j in self._storage.metadata.jobs(self._qname) if j.get("dry_run")]
        return {"ckpt_del": [a["tag"] for a in old_autos] + [t["tag"] for t in staged["deleted_tags"]],
                "ckpt_put": puts,
                # recorded_step: the history is whole through this step (storage/scripts.py RECORD_WRITE)
                "stats": {"step": memory.step, "weight_hash": memory.weight_hash, "recorded_step": memory.step},
                "jobs_del": dry_runs, "job": job, "base": base}

    def _exact_cleanup(self, staged: dict, old_autos: list[dict], kept: list[dict], old_segments: list[dict],
                       base: dict | None) -> list[str]:
        keys = [a["object_key"] for a in old_autos]
        keys += [t["old"]["object_key"] for t in staged["tags"].values()]
        keys += [t["object_key"] for t in staged["deleted_tags"]]
        keys += [s["key"] for s in old_segments if s not in kept]
        if base is not None:
            old = self._history.base() or {}
            keys += [key for key in (old.get("object_key"), (old.get("pending") or {}).get("object_key")) if key]
        return keys

    def _exact_report(self, job: dict, rebuild: Rebuild, start: dict, staged: dict, old_autos: list[dict],
                      cleanup: list[str], tail: int, kept: list[dict], old_segments: list[dict]) -> dict:
        from actors.forgetting import now_iso  # noqa: PLC0415

        kind = "genesis" if start.get("object_key") is None else (
            "history base" if "tag" not in start else ("auto-checkpoint" if start["tag"].startswith("auto@")
                                                        else f"checkpoint {start['tag']}"))
        # bytes new to the store: chunks it did not hold yet, manifests, log segments
        written = staged["auto"]["stored"] + sum(s["size"] for s in staged["segments"])
        written += sum(t["stored"] for t in staged["tags"].values())
        return {"exact": True, "forgotten": rebuild.removed, "step": rebuild.memory.step,
                "weight_hash": rebuild.memory.weight_hash,
                "replayed_from": {"kind": kind, "step": int(start["step"])},
                "replayed_entries": len(rebuild.entries), "tail_entries": tail,
                "checkpoints": {"rebuilt": sorted(staged["tags"]),
                                "deleted": sorted(t["tag"] for t in staged["deleted_tags"]),
                                "auto_checkpoints_replaced": [a["tag"] for a in old_autos]},
                "archive": {"segments_kept": len(kept), "segments_written": len(staged["segments"]),
                            "segments_deleted": len([s for s in old_segments if s not in kept])},
                "objects_deleted": cleanup, "bytes_written": int(written),
                "forks": self._fork_report(rebuild, job), "finished_at": now_iso()}

    def _regenerated_history(self, rebuild: Rebuild) -> list[dict]:
        """The observation history as the twin would have it: items before the replay as they
        were, the replayed ones (forgotten ones gone) from the replay."""
        old = self._storage.metadata.history(self._qname, HISTORY_CAP)
        before = old[: max(0, len(old) - rebuild.replayed)]
        fresh = [{**item, "text": cut_history_text(item["text"]), "at": self._entry_time(item["at"])}
                 for item in rebuild.items]
        return (before + fresh)[-HISTORY_CAP:]

    def _total_observations(self) -> int:
        return int(self._storage.metadata.get_stats(self._qname)["total_observations"])

    def _domains_after(self, rebuild: Rebuild) -> list[str]:
        seen = set(self._storage.metadata.get_stats(self._qname)["domains"])
        alive = set(rebuild.memory.domain_counts) | rebuild.domains
        return sorted(d for d in seen if d in alive or d not in rebuild.forgotten_domains)

    def _rebuilt_results(self, rebuild: Rebuild, writes: list[dict]):
        results = RecentResults(self._spec.settings.remembered_requests)
        # Writes the replay did not answer stay known as applied: one from before its start, or
        # a forgotten one (a retry must not learn it again). Their answers are the rewritten
        # write records' (the replay's, or unchanged from before its start), else the history's.
        for request_id, fingerprint in self._results.known():
            results.put(request_id, None, fingerprint)
        for write in writes:
            results.put(write["request_id"], write["answer"], write["fingerprint"])
        for request_id, result, fingerprint in rebuild.results:
            results.put(request_id, result, fingerprint)
        return results

    @staticmethod
    def _write_after(write: dict, forgotten_writes: set[str], texts: set[str],
                     replayed: dict[str, tuple[dict, str]] | None = None) -> dict:
        """A write's record (storage `recent_writes`) as a forget leaves it, still known as
        applied: with the replay's answer where an exact forget replayed the write; without the
        fingerprint (a hash of what it held) if the forget took from it, nor its old answer;
        without an answer that names a forgotten text (its activated patterns)."""
        request_id, answer, fingerprint = write["request_id"], write["answer"], write["fingerprint"]
        if replayed is not None and request_id in replayed:
            answer, fingerprint = replayed[request_id]
        elif request_id in forgotten_writes:
            answer = None
        if request_id in forgotten_writes:
            fingerprint = None
        if answer is not None and texts & set(answer.get("patterns_activated") or ()):
            answer = None
        return write_record(request_id, answer, fingerprint)

    def _mark_forgotten(self, request_ids: set[str]) -> None:
        """Writes a forget took observations from: a retry under their ids is answered as
        applied, whatever it holds, and never learned again (the ids are in Redis too, for
        restarts); their fingerprints (hashes of what they held) are dropped."""
        self._forgotten_writes |= request_ids
        for request_id in request_ids:
            if request_id in self._results:
                self._results.redact(request_id, fingerprint=True)

    # ---- approximate ---------------------------------------------------------------------------

    def _forget_approximately(self, job: dict, selector: Selector) -> None:
        from memory.unlearn import matching_records  # noqa: PLC0415

        match = self._approximate_match(job, selector)
        job["exact"] = False
        if job["dry_run"]:  # a read: the memory as the newest write left it
            with self._reading() as memory:
                found = matching_records(memory, match)
                listed = sorted({memory.store.text(r) for r in found})[:1000]
            job["forgotten"] = len(found)
            # outside the lock: _finish takes the write lock to free the memory for the next job
            return self._finish(job, {"would_forget": len(found), "records": listed, "listed": len(listed),
                                      "forks": self._fork_report(None)})
        with self._ckpt_lock, self._write_lock:
            self._settle()  # never save weights a failed write touched
            memory = self._mem
            found = matching_records(memory, match)
            texts = {memory.store.text(r) for r in found}
            erase = bool(found) or self._tags_holding(match)
            if erase:  # else the state, its checkpoints and its history stay as they are
                self._erase_approximately(job, memory, match, texts)
        if not erase:
            job["forgotten"] = 0
            return self._finish(job, {"forgotten": 0, "note": "nothing selected is in this memory",
                                      "forks": self._fork_report(None)})
        self._finish_cleanup(job, texts)

    def _erase_approximately(self, job: dict, memory, match, texts: set[str]) -> None:
        """Erase what `match` selects from the live `memory` and the user tags, and commit it
        (caller holds both locks; the old objects are deleted after, by `_finish_cleanup`)."""
        from memory.unlearn import summary  # noqa: PLC0415

        self.flush_records()
        result = memory.forget_approximately(match)
        seq = self._seq
        auto = self._ckpts.put_object(to_parts(memory), tag=self._ckpts.next_auto_tag(),
                                      step=memory.step, weight_hash=memory.weight_hash, description="auto",
                                      seq=seq)
        self._note_staged(job, [auto["object_key"]])
        staged = {"auto": auto, "tags": {}, "deleted_tags": [], "segments": []}
        self._approximate_tags(job, match, staged)
        base = self._history.copy_state(auto)  # the log no longer explains the state: it restarts
        old_autos, old_segments = self._ckpts.autos(), self._history.segments()
        cleanup = self._exact_cleanup(staged, old_autos, [], old_segments, base)
        report = {"exact": False, "forgotten": result["records"], "records_erased": result["records"],
                  "surprise_before": summary(result["surprise_before"]),
                  "surprise_after": summary(result["surprise_after"]),
                  "checkpoints": {"rebuilt": sorted(staged["tags"]),
                                  "deleted": sorted(t["tag"] for t in staged["deleted_tags"]),
                                  "auto_checkpoints_replaced": [a["tag"] for a in old_autos]},
                  "archive": {"segments_deleted": len(old_segments)}, "objects_deleted": cleanup,
                  "history_restarts_at_step": memory.step, "forks": self._fork_report(None),
                  "note": "approximate: records erased and the network pushed away from them; what they "
                          "did to the rest of the network stays"}
        job.update(status="done", forgotten=result["records"], progress=1.0, report=report,
                   weight_hash=memory.weight_hash, selector=None, staged=[], cleanup=cleanup,
                   **self._old_chunks(cleanup))
        from actors.forgetting import now_iso  # noqa: PLC0415

        job["finished_at"] = now_iso()
        plan = self._plan(job, memory, staged, old_autos, base)
        plan["archive"] = []
        cut = {cut_history_text(t) for t in texts}
        history = self._storage.metadata.history(self._qname, HISTORY_CAP)
        # The writes that held them, as far as the history still names them (no log here);
        # their other items stay, without the fingerprint of the whole write.
        forgotten_writes = {h["request_id"] for h in history if h.get("text") in cut and h.get("request_id")}
        plan["history"] = [_without_forgotten(h, forgotten_writes, texts) for h in history
                           if h.get("text") not in cut]
        plan["forgotten_writes"] = sorted(forgotten_writes)
        # The writes the history does not detail may have held a forgotten text too: their
        # fingerprints go (they stay known as applied).
        detailed = {h["request_id"] for h in history if h.get("request_id")}

        def after(request_id: str, answer: dict | None, fingerprint: str | None) -> dict:
            known_print = fingerprint if request_id in detailed else None
            return self._write_after(write_record(request_id, answer, known_print), forgotten_writes, texts)

        plan["writes"] = [after(w["request_id"], w["answer"], w["fingerprint"])
                          for w in self._storage.metadata.recent_writes(self._qname)]
        for request_id, fingerprint in self._results.known():  # the live ones, likewise
            kept = after(request_id, self._results.get(request_id), fingerprint)
            self._results.redact(request_id, result=kept["answer"] is None, fingerprint=kept["fingerprint"] is None)
        with self._as_owner():
            self._storage.metadata.forget_commit(self._qname, plan, [], self._audit(job), owner=self._owner)
        self._mark_forgotten(forgotten_writes)
        self._after_swap(auto, 0)
        self._job = None

    def _approximate_match(self, job: dict, selector: Selector):
        """What an approximate job erases: what `selector` selects; on a fork's run of its
        parent's job, a steps selector names the parent's answers, so only what the fork
        inherited (its steps up to its fork point), not the fork's own observations."""
        if job.get("parent_job") is None or selector.kind != "steps":
            return selector.matches
        inherited = int(self._storage.metadata.get_memory(self._qname).get("source_step") or 0)
        return lambda text, step, domain: step <= inherited and selector.matches(text, step, domain)

    def _tags_holding(self, match) -> bool:
        """Whether a user tag's state holds a record `match` selects."""
        from memory.unlearn import matching_records  # noqa: PLC0415

        return any(matching_records(self._ckpts.load(info), match) for info in self._user_tags())

    def _approximate_tags(self, job: dict, match, staged: dict) -> None:
        for info in self._user_tags():
            state = self._ckpts.load(info)
            if not state.forget_approximately(match)["records"]:
                continue
            if job["checkpoints"] == "delete":
                staged["deleted_tags"].append(info)
                continue
            new = self._ckpts.put_object(to_parts(state), tag=info["tag"], step=state.step,
                                         weight_hash=state.weight_hash, description=info.get("description", ""),
                                         seq=info.get("seq"))
            staged["tags"][info["tag"]] = {**new, "created_at": info.get("created_at"), "old": info}
            self._note_staged(job, [new["object_key"]])

    # ---- cleanup -------------------------------------------------------------------------------

    def _old_chunks(self, keys: list[str]) -> dict:
        """The chunks the old checkpoints name (before the commit; they are swept after it,
        as far as no other checkpoint of any memory names them), and the time to spare
        claims from: a writer that claimed one since may be about to name it."""
        chunks: set[str] = set()
        for key in keys:
            manifest = self._storage.content.manifest(key) if not key.endswith(SEGMENT_SUFFIX) else None
            chunks |= manifest.chunk_shas() if manifest is not None else set()
        return {"cleanup_chunks": sorted(chunks), "commit_time": self._storage.metadata.server_time()}

    def _finish_cleanup(self, job: dict, texts: set[str] = frozenset()) -> None:
        """Delete the objects that held the forgotten data (listed in the committed job), then
        the chunks only they named, and unnamed chunks holding one of `texts` (pruned before),
        at once (not left to a later GC)."""
        from storage.gc import GarbageCollector  # noqa: PLC0415

        self._delete_objects(job.get("cleanup", []))
        collector = GarbageCollector(self._storage.content)
        while True:
            swept = collector.sweep(set(job.get("cleanup_chunks", [])), float(job.get("commit_time", 0.0)),
                                    holding=[t.encode("utf-8") for t in texts])
            if swept["ran"]:
                break
            # Another collection holds the lock, or a manifest cannot be read (logged by the
            # sweep): the job reads "running" until its chunks are gone, as it promises; a stop
            # leaves them listed in the job, for the next start.
            log.warning("memory %s: forget job %s: the chunks that held the data are not deleted yet "
                        "(the collector lock is held, or a manifest cannot be read); trying again",
                        self._qname, job["job_id"])
            if self._stop.wait(CLEANUP_RETRY_SECONDS):
                return
        if job.get("report") is not None and job.get("cleanup_chunks"):
            job["report"]["chunks_deleted"] = len(swept["deleted"])
            job["report"]["chunks_shared_with_other_checkpoints"] = len(swept["left"])
        job.update(cleanup=[], cleanup_chunks=[])
        self._storage.metadata.job_put(self._qname, job)
        self._storage.metadata.rewrite_append_only_file()

    def _delete_objects(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self._storage.checkpoints.delete(key)
            except Exception as exc:  # noqa: BLE001 - retried by the next start (still listed)
                log.error("memory %s: could not delete %s: %s", self._qname, key, exc)
                raise


def _without_forgotten(item: dict, forgotten_writes: set[str], texts: set[str]) -> dict:
    """A history item kept by an approximate forget, without what tells of the forgotten texts:
    its write's fingerprint (a hash of what it held) if that write held one, its write's totals
    if their activated patterns name one."""
    drop = set()
    if item.get("request_id") in forgotten_writes:
        drop |= {"fingerprint", "write"}
    if texts & set((item.get("write") or {}).get("patterns_activated") or ()):
        drop.add("write")
    return {k: v for k, v in item.items() if k not in drop} if drop else item
