"""Forget jobs through the control plane: start one on a memory, read its status, apply it to
the memory's forks, read the tenant's audit records.

The job itself runs in the memory's actor (actors/forgetting.py) and keeps its status in Redis,
so any gateway replica can answer a status read; reading it goes through the actor, which
wakes a hibernated memory and with it a job that was stopped (it resumes).

Forks are separate memories. A job's report lists the memory's forks and whether the state
each was made from held a selected observation. With `forks: true`, once the job is done, the
same forget runs on every fork that did (or may have: a fork from before log positions): in
exact mode from the parent's replayed state at the fork point, which the parent's job stored
as the fork's new history base. The gateway that started the job drives this in the
background and every status read finishes it (so a gateway restart only delays it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from typing import Any

from errors import Busy, InvalidInput, NotFound

from cluster.names import qualify

__all__ = ["ForgetOps"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
FORK_RUN_UNFINISHED = ("not started", "pending", "running")  # a fork's entry in a job's report


def _runs_on_forks(job: dict) -> bool:
    """A job committed on its memory that goes on to run on the memory's forks (`forks: true`).
    Committed: it has its report, and reads "running" only while the objects that held the data
    are deleted; the forks' runs start then, not after that (which may wait for another
    collection), so a delete of the memory in between cannot leave them not started."""
    committed = job["status"] == "done" or (job["status"] == "running" and job.get("report") is not None)
    return bool(job.get("forks")) and committed and not job.get("dry_run")


def derived_job_id(base: str, part: str) -> str:
    """A job id that follows from what started it, the same on every retry: a parent job's run
    on one fork (parent job id, fork), or a start under an Idempotency-Key (memory, key)."""
    return hashlib.sha256(f"{base}/{part}".encode()).hexdigest()[:32]


class ForgetOps:
    """The forget calls of MemoryCluster (it passes itself)."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._selectors: dict[str, dict] = {}  # job id -> request, while its forks are pending
        self._on_forks: dict[str, str] = {}  # memory -> the job driven here until its forks finish
        self._tasks: set[asyncio.Task] = set()

    def close(self) -> None:
        """Stop driving forks (a status read on another gateway finishes the work)."""
        for task in list(self._tasks):
            task.cancel()

    async def start(self, tenant: str, name: str, request: dict, who: dict, request_id: str | None = None) -> dict:
        """A new job; with the caller's `request_id`, a retried start finds the job the first
        one started (its id follows from the request id) instead of starting another."""
        job_id = uuid.uuid4().hex if request_id is None else derived_job_id(qualify(tenant, name), request_id)
        running = self._on_forks.get(qualify(tenant, name))
        if running not in (None, job_id):
            # The memory's own job is done, its forks' runs are not: a second job would meet them
            # busy and leave a fork holding its text (it read done all the same).
            raise Busy(f"a forget of memory {name!r} is still running on its forks (job {running}); start "
                       "this one when that job reads done")
        return await self._launch(tenant, name, job_id, request, who)

    async def _launch(self, tenant: str, name: str, job_id: str, request: dict, who: dict) -> dict:
        job = await self._cluster._routes().call(qualify(tenant, name), "forget_start", job_id,
                                                 {**request, "who": who})
        if request.get("forks") and not request.get("dry_run") and job["status"] not in ("done", "failed") \
                and job_id not in self._selectors:  # not for a retried start of a job driven already
            self._selectors[job_id] = {k: v for k, v in request.items() if k not in ("base", "parent_job")}
            self._on_forks[qualify(tenant, name)] = job_id
            task = asyncio.get_running_loop().create_task(self._drive(tenant, name, job_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return job

    async def status(self, tenant: str, name: str, job_id: str) -> dict:
        job = await self._cluster._routes().call(qualify(tenant, name), "forget_status", job_id)
        if _runs_on_forks(job):
            job["report"]["forks"] = forks = await self._forks(tenant, name, job)
            if any(fork["status"] in FORK_RUN_UNFINISHED for fork in forks):
                # Done on this memory, not yet everywhere it was asked to be: a caller waiting for
                # "done" must not read a fork that still holds the text (the report says which).
                job["status"] = "running"
        if job["status"] in ("done", "failed"):
            self._release(tenant, name, job["job_id"])  # a caller told "done" may start the next job
        return job

    def _release(self, tenant: str, name: str, job_id: str) -> None:
        """`name` no longer waits on `job_id`'s forks (if that was the job it waited on)."""
        if self._on_forks.get(qualify(tenant, name)) == job_id:
            del self._on_forks[qualify(tenant, name)]

    async def audit(self, tenant: str, limit: int) -> dict:
        records = await self._cluster._meta("audit_read", tenant, limit)
        return {"records": records}

    # ---- forks ----------------------------------------------------------------------------------

    async def _drive(self, tenant: str, name: str, job_id: str) -> None:
        """Wait for the job, then start it on the forks (a status read does the same)."""
        try:
            while True:
                job = await self.status(tenant, name, job_id)
                if job["status"] in ("done", "failed"):
                    return
                await asyncio.sleep(POLL_SECONDS)
        except Exception as exc:  # noqa: BLE001 - a status read finishes the work later
            log.warning("forget job %s on %s: driving its forks failed: %s", job_id, name, exc)
        finally:
            self._release(tenant, name, job_id)  # after a failed read too: not held forever

    async def _forks(self, tenant: str, name: str, job: dict) -> list[dict]:
        """Each fork entry of a done job, with its own job's id and status (started here once),
        which reads done only once the job is done on that fork's forks too, and theirs."""
        out = []
        request = self._selectors.get(job["job_id"])
        for fork in job["report"].get("forks", []):
            entry = {k: v for k, v in fork.items() if k != "base"}  # the base is the child job's
            if fork.get("contains") is False:
                out.append({**entry, "job_id": None, "status": "not needed"})
                continue
            child_id = derived_job_id(job["job_id"], fork["name"])
            child = await self._child(tenant, fork, child_id, request, job)
            entry.update(job_id=child_id, status=child["status"] if child else "not started",
                         exact=child.get("exact") if child else None)
            out.append(entry)
        if all(e["status"] != "not started" for e in out):
            self._selectors.pop(job["job_id"], None)
        return out

    async def _child(self, tenant: str, fork: dict, child_id: str, request: dict | None, job: dict) -> dict | None:
        qname = qualify(tenant, fork["name"])
        try:
            found = await self._cluster._meta("job_get", qname, child_id)
        except NotFound:
            return {"status": "fork deleted"}
        if found is not None and _runs_on_forks(found):
            try:  # done on the fork; "running" while it is still running on the fork's own forks
                return await self.status(tenant, fork["name"], child_id)
            except NotFound:
                return {"status": "fork deleted"}
        if found is not None or request is None:
            return found  # running or done; or the request is gone (this gateway restarted)
        child = {**request, "base": fork.get("base"), "parent_job": job["job_id"], "forks": True}
        try:
            return await self._launch(tenant, fork["name"], child_id, child, job.get("who") or {})
        except Busy:
            return None  # the fork runs a job of its own: started on a later status read
        except (InvalidInput, NotFound) as exc:
            return {"status": "failed", "error": str(exc)}
