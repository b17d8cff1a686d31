"""A memory's kept history and its forget jobs, on Redis (mixed into MetadataStore).

What the actors keep so a memory can forget exactly (actors/history.py, actors/forget.py):
- the *archive index*: one JSON info per archived log segment (an object in the checkpoint
  store holding WAL entries that a checkpoint made redundant), oldest first;
- the *history base*: the state the kept history starts from (genesis, or a stored copy);
- *jobs*: each forget job's status and report, by id;
- the *audit* list of a tenant: who forgot what kind of selection, when, how, never the text.

`forget_commit` swaps a memory's whole recovery point in one Lua script (storage/scripts.py):
checkpoint index, WAL, archive index, observation history, stats, job record and audit record,
so a crash leaves either the old memory or the new one, never a mix.
"""

from __future__ import annotations

import logging
from typing import Any

from errors import InvalidInput
from storage.codec import decode_write_record, dumps_json, encode_wal_entry, encode_write_record, loads_json
from storage.keys import check_name, memory_not_found, superseded
from storage.translate import redis_errors
from storage.wal import fence_token

__all__ = ["HistoryMixin", "AUDIT_CAP"]

AUDIT_CAP = 100_000  # audit records kept per tenant (the newest)

log = logging.getLogger(__name__)


class HistoryMixin:
    """Relies on MetadataStore's `_client`, `keys`, `where`, `_run`, `_registered_read`."""

    _client: Any
    keys: Any
    where: str

    def _guarded(self, script: str, name: str, key: str, *values: Any) -> None:
        check_name(name)
        if self._run(script, [self.keys.registry(), key], [name, *values]) == -1:  # type: ignore[attr-defined]
            raise memory_not_found(name)

    # -- archive index ----------------------------------------------------------------------

    def archive_segments(self, name: str) -> list[dict]:
        """Infos of the archived log segments, oldest first."""
        (items,) = self._registered_read(name, lambda p: p.lrange(self.keys.archive(name), 0, -1))  # type: ignore[attr-defined]
        return [loads_json(raw) for raw in items]

    def archive_add(self, name: str, info: dict) -> None:
        self._guarded("GUARDED_RPUSH", name, self.keys.archive(name), dumps_json(info))

    def archive_remove(self, name: str, infos: list[dict]) -> None:
        """Forget segments (retention): their objects are deleted by the caller afterwards."""
        check_name(name)
        with redis_errors(self.where):
            pipe = self._client.pipeline(transaction=True)
            for info in infos:
                pipe.lrem(self.keys.archive(name), 0, dumps_json(info))
            pipe.execute()

    # -- history base -------------------------------------------------------------------------

    def history_base(self, name: str) -> dict | None:
        """Where the kept history starts ({"seq", "step", "object_key", ...}); None: unknown
        (a memory from before history was kept, until its actor starts)."""
        (raw,) = self._registered_read(name, lambda p: p.get(self.keys.history_base(name)))  # type: ignore[attr-defined]
        return None if raw is None else loads_json(raw)

    def set_history_base(self, name: str, info: dict) -> None:
        self._guarded("GUARDED_SET", name, self.keys.history_base(name), dumps_json(info))

    # -- jobs ---------------------------------------------------------------------------------

    def job_put(self, name: str, job: dict) -> None:
        self._guarded("GUARDED_HSET", name, self.keys.jobs(name), job["job_id"], dumps_json(job))

    def job_get(self, name: str, job_id: str) -> dict | None:
        (raw,) = self._registered_read(name, lambda p: p.hget(self.keys.jobs(name), job_id))  # type: ignore[attr-defined]
        return None if raw is None else loads_json(raw)

    def forgotten_writes(self, name: str) -> set[str]:
        """Request ids of the writes forget jobs took observations from: a retry under one is
        answered as applied and never learned again (not even after a restart)."""
        (ids,) = self._registered_read(name, lambda p: p.smembers(self.keys.forgotten_writes(name)))  # type: ignore[attr-defined]
        return {i.decode() if isinstance(i, bytes) else i for i in ids}

    def recent_writes(self, name: str) -> list[dict]:
        """Records of the newest answered writes ({request_id, fingerprint, answer}), oldest
        first: what a restart must know so a retry of one is answered, not applied again."""
        (items,) = self._registered_read(name, lambda p: p.lrange(self.keys.writes(name), 0, -1))  # type: ignore[attr-defined]
        return [decode_write_record(raw) for raw in items]

    def jobs(self, name: str) -> list[dict]:
        (items,) = self._registered_read(name, lambda p: p.hgetall(self.keys.jobs(name)))  # type: ignore[attr-defined]
        return sorted((loads_json(raw) for raw in items.values()), key=lambda j: j.get("created_at", ""))

    # -- audit --------------------------------------------------------------------------------

    def audit_append(self, tenant: str, record: dict) -> None:
        key = self.keys.audit(tenant)
        with redis_errors(self.where):
            pipe = self._client.pipeline(transaction=True)
            pipe.rpush(key, dumps_json(record))
            pipe.ltrim(key, -AUDIT_CAP, -1)
            pipe.execute()

    def audit_read(self, tenant: str, limit: int = 100) -> list[dict]:
        """The tenant's newest `limit` audit records, newest last."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"audit limit must be an int >= 1, got {limit!r}")
        with redis_errors(self.where):
            items = self._client.lrange(self.keys.audit(tenant), -limit, -1)
        return [loads_json(raw) for raw in items]

    def rewrite_append_only_file(self) -> bool:
        """Ask the server to rewrite its append-only file, so deleted values (a forgotten text
        in old WAL entries) leave its disk too. Best effort: False where AOF is off or the
        command is not allowed (a managed Redis: its snapshots and backups are its own)."""
        try:
            with redis_errors(self.where):
                if not self._client.info("persistence").get("aof_enabled"):
                    return False
                self._client.bgrewriteaof()
                return True
        except Exception as exc:  # noqa: BLE001 - e.g. a rewrite already running: it will hold the cut
            log.info("append-only file rewrite not started: %s", exc)
            return False

    # -- the swap -------------------------------------------------------------------------------

    def forget_commit(self, name: str, plan: dict, wal: list[dict] | None, audit: dict | None,
                      owner: int | None = None) -> None:
        """Apply a forget job's new state in one atomic script (see the module doc). `plan` holds
        ckpt_del, ckpt_put ({tag: info}), archive / history (lists of dicts, or None: keep),
        domains (list or None), stats, jobs_del, job, base (dict or None), forgotten_writes
        (request ids, added); `wal` (entries, or None: keep) replaces the WAL. With `owner`
        (see `wal_append`), Superseded and nothing written if another actor has taken the memory."""
        check_name(name)
        tenant = name.split("/", 1)[0]
        doc = {
            "ckpt_del": list(plan.get("ckpt_del", [])),
            "ckpt_put": [[tag, dumps_json(info).decode()] for tag, info in plan.get("ckpt_put", {}).items()],
            "wal": wal is not None,
            "archive": _json_list(plan.get("archive")),
            "history": _json_list(plan.get("history")),
            "domains": plan.get("domains"),
            "stats": {k: str(v) for k, v in plan.get("stats", {}).items()},
            "jobs_del": list(plan.get("jobs_del", [])),
            "job": [plan["job"]["job_id"], dumps_json(plan["job"]).decode()],
            "base": None if plan.get("base") is None else dumps_json(plan["base"]).decode(),
            "audit": None if audit is None else dumps_json(audit).decode(),
            "forgotten_writes": sorted(plan.get("forgotten_writes", [])),
            "owner": fence_token(owner),
        }
        wal_values: list[Any] = []
        for entry in wal or []:
            fields = encode_wal_entry(entry)
            if len(fields) != 4:  # the script takes 8 values per entry
                raise InvalidInput("entries written by a forget job need a seq")
            wal_values += [k for pair in fields.items() for k in pair]
        writes = plan.get("writes")
        doc.update(wal_values=len(wal_values), writes=None if writes is None else len(writes))
        args: list[Any] = [name, dumps_json(doc), *wal_values, *(encode_write_record(w) for w in writes or [])]
        keys = [self.keys.registry(), self.keys.checkpoints(name), self.keys.checkpoint_order(name),
                self.keys.wal(name), self.keys.archive(name), self.keys.history(name), self.keys.stats(name),
                self.keys.domains(name), self.keys.jobs(name), self.keys.history_base(name),
                self.keys.audit(tenant), self.keys.forgotten_writes(name), self.keys.owner(name),
                self.keys.writes(name)]
        result = self._run("FORGET_COMMIT", keys, args)  # type: ignore[attr-defined]
        if result == -1:
            raise memory_not_found(name)
        if result == -2:
            raise superseded(name, "its forget job was not committed here")


def _json_list(values: list | None) -> list[str] | None:
    return None if values is None else [dumps_json(v).decode() for v in values]
