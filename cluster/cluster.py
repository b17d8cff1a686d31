"""MemoryCluster: the control plane the gateway calls (create, list, fork, observe, ...).

Cheap to construct; `await start()` joins or starts Ray, opens storage (starting the embedded
Valkey when no redis_url is set) and finds or creates the deployment's supervisor. Every
method is async; blocking storage calls run in a worker thread, actor calls are awaited.
Names are scoped by tenant: the caller passes its tenant and a short name, and everything
below works on the fully qualified "tenant/name". Results are shaped here, exactly as the
public contract's responses (serve/schemas.py), so the Python API and REST/MCP answer alike.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import ray

import contract
from actors import (ActorSpec, Checkpoints, blob_to_parts, is_auto, normalize_config, out_of_order,
                    parts_to_blob)
from contract import DEFAULT_PAGE, check_page
from errors import (Busy, CheckpointCorrupt, CheckpointNotFound, IncompatibleState, InvalidInput,
                    MemoryNotFound, OutOfOrder, QuotaExceeded, Unavailable)
from storage import Storage, open_storage, shown

from cluster.creating import Creations
from cluster.forget import ForgetOps
from cluster.names import check_tenant, check_user_tag, qualify
from cluster.ordering import OrderedWrites
from cluster.router import ActorRouter
from cluster.settings import ClusterSettings
from cluster.supervisor import current_supervisor, unwrap

__all__ = ["MemoryCluster", "ExportedState"]

log = logging.getLogger(__name__)

_OBSERVE_KEYS = ("surprise", "weight_delta", "patterns_activated", "step", "weight_hash")
_STATS_KEYS = ("total_observations", "weight_parameters", "capacity_used", "avg_surprise", "domains",
               "weight_hash", "patterns", "episodes", "size_mb")


@dataclass(frozen=True)
class ExportedState:
    """A memory's state as stored (a checkpoint's bytes) with what it needs to run elsewhere."""

    config: dict
    weight_hash: str
    step: int
    data: bytes
    seq: int | None = None  # where in the source memory's log this state is (its forks' lineage)
    encoder: str | None = None  # an image header's own `encoder` field (None: only the config's)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _image_mismatches(config: dict, state: ExportedState, held: dict) -> list[str]:
    """Where what an image says about its checkpoint (`config`: its header's, made whole as the
    new memory would run it; encoder, step, weight_hash) differs from what the checkpoint itself
    holds (`blob_to_parts`): one line per field."""
    problems, saved = [], held["config"]
    for key in sorted(set(config) | set(saved)):
        if config.get(key) != saved.get(key):
            problems.append(f"config.{key} is {_show(config.get(key))}, the checkpoint's is {_show(saved.get(key))}")
    if state.encoder is not None and state.encoder != saved.get("encoder"):
        problems.append(f"encoder is {_show(state.encoder)}, the checkpoint's is {_show(saved.get('encoder'))}")
    if state.step != held["step"]:
        problems.append(f"step is {_show(state.step)}, the checkpoint's is {held['step']}")
    if state.weight_hash != held["weight_hash"]:
        problems.append(f"weight_hash is {_show(state.weight_hash)}, the checkpoint's weights hash to "
                        f"{held['weight_hash'][:12]}")
    return problems


def _short(qname: str | None) -> str | None:
    return None if qname is None else shown(qname)


def _user_checkpoints(infos: list[dict]) -> list[dict]:
    """The user-tagged checkpoints of a memory as the API lists them, oldest first."""
    return [{"tag": i["tag"], "created_at": i["created_at"], "size_mb": round(i["size"] / 1e6, 3),
             "description": i.get("description", ""), "weight_hash": i["weight_hash"], "step": i["step"]}
            for i in infos if not is_auto(i["tag"])]


def _parent_of(record: dict) -> dict:
    """A listing's fork edge: the parent's short name, and whether that memory is gone."""
    return {"parent": _short(record.get("parent")), "parent_deleted": bool(record.get("parent_deleted"))}


def _damaged(qname: str, tag: str | None, exc: Exception) -> CheckpointCorrupt:
    """The error for a source checkpoint that cannot be read: it names the tag, never the
    object's key or path (those go to the log)."""
    log.error("checkpoint %s of %s cannot be read: %s", tag or "(live state)", qname, exc)
    what = f"checkpoint {tag!r}" if tag is not None else "the saved state"
    return CheckpointCorrupt(f"{what} of memory {_short(qname)} is damaged or missing in the checkpoint "
                             "store; use another checkpoint")


class _SourceReplaced(Exception):
    """A fork's source checkpoint was replaced after the fork read it (MemoryCluster.fork)."""


AOF_REWRITE_DELAY = 10.0  # seconds a delete waits for others to share its append-only file rewrite
FORK_ATTEMPTS = 3  # forks of a source that forget jobs keep rebuilding, before 503


class MemoryCluster:
    """Create, fork, checkpoint and call memories, each living in its own Ray actor."""

    def __init__(self, settings: ClusterSettings | None = None) -> None:
        self.settings = settings if settings is not None else ClusterSettings()
        self._storage: Storage | None = None
        self._supervisor: Any = None
        self._router: ActorRouter | None = None
        self._start_lock = asyncio.Lock()
        self._forget = ForgetOps(self)
        self._creations = Creations(self)
        self._ordered = OrderedWrites()
        self._aof_rewrite: asyncio.Task | None = None  # the one pending after deletes

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Join/start Ray, open storage, find the supervisor. Idempotent."""
        async with self._start_lock:
            if self._router is not None:
                return
            s = self.settings
            if not ray.is_initialized():
                ray.init(address=s.ray_address, namespace=s.namespace)
            self._storage = await asyncio.to_thread(open_storage, s.storage)
            spec = ActorSpec(storage=self._storage.settings, settings=s.actor)
            self._supervisor = await current_supervisor(s, spec)
            await asyncio.to_thread(self._storage.metadata.index_names)  # once, for older registries
            self._router = ActorRouter(self._supervisor, self._creations.is_whole, patience=s.actor_start_timeout)
            self._creations.start_sweeping()

    async def close(self, *, stop_actors: bool = False) -> None:
        """Release storage. With `stop_actors`, also kill the supervisor and every memory actor
        of the namespace (tests, single-process runs); otherwise they outlive this process."""
        if self._router is None:
            return
        self._forget.close()
        self._creations.close()
        if self._aof_rewrite is not None and not self._aof_rewrite.done():
            self._aof_rewrite.cancel()
            await self._meta("rewrite_append_only_file")  # now, for the deletes it was waiting for
        try:
            if stop_actors:
                await self._supervisor.stop_all.remote()
                ray.kill(self._supervisor, no_restart=True)
        finally:
            self._router = None
            storage, self._storage = self._storage, None
            if storage is not None:
                await asyncio.to_thread(storage.close)

    @property
    def storage(self) -> Storage:
        """The connected storage (after start())."""
        if self._storage is None:
            raise Unavailable("MemoryCluster is not started; await cluster.start() first")
        return self._storage

    def _routes(self) -> ActorRouter:
        if self._router is None:
            raise Unavailable("MemoryCluster is not started; await cluster.start() first")
        return self._router

    async def _meta(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.storage.metadata, method), *args, **kwargs)

    async def _call(self, tenant: str, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._routes().call(qualify(tenant, name), method, *args, **kwargs)

    # ---- registry ---------------------------------------------------------------------------

    async def create_memory(self, tenant: str, name: str, config: dict | None = None) -> dict:
        """Register a memory and start its actor (which writes the initial checkpoint)."""
        qname = qualify(tenant, name)
        full = normalize_config(config)
        record = {"tenant": tenant, "name": qname, "config": full, "encoder": full["encoder"],
                  "parent": None, "source_tag": None}
        # Nothing to do before the registration, which refuses a taken name, then the quota.
        stats = await self._create_seeded(record, None)
        return {"name": name, "weight_hash": stats["weight_hash"], "weight_parameters": stats["weight_parameters"]}

    async def _check_quota(self, tenant: str) -> None:
        """QuotaExceeded if `tenant` already has its NMEM_MAX_MEMORIES_PER_TENANT memories: an
        early refusal, before a fork's snapshot or an import's decoding. The registration itself
        (`_create_seeded`) checks again in the same step as it inserts, so concurrent creations
        never overshoot the quota."""
        if await self._meta("count_memories", check_tenant(tenant)) >= self.settings.max_memories_per_tenant:
            raise self._over_quota()

    def _over_quota(self) -> QuotaExceeded:
        limit = self.settings.max_memories_per_tenant
        return QuotaExceeded(f"quota: at most {limit} memories per tenant "
                             "(NMEM_MAX_MEMORIES_PER_TENANT); delete some first")

    async def list_memories(self, tenant: str, cursor: str | None = None, limit: int = DEFAULT_PAGE,
                            prefix: str | None = None) -> dict:
        """One page of the tenant's memories by name (`next_cursor` continues it): a few Redis
        round trips and one supervisor call per page, however many memories there are."""
        records, next_cursor = await self._page(tenant, cursor, limit, prefix)
        # Memories this replica wrote to record their counts in the background: flush them, so a
        # caller always sees its own writes counted.
        held = [r["name"] for r in records if self._routes().holds(r["name"])]
        if held:
            await asyncio.gather(*(self._routes().call_if_live(q, "flush_records") for q in held))
            records, next_cursor = await self._page(tenant, cursor, limit, prefix)
        live = set(await self._supervisor.live.remote())
        return {"memories": [{"name": _short(r["name"]), "total_observations": r["step"], "live": r["name"] in live,
                              "being_created": r["being_created"], **_parent_of(r)} for r in records],
                "next_cursor": next_cursor}

    async def _page(self, tenant: str, cursor: str | None, limit: int, prefix: str | None
                    ) -> tuple[list[dict], str | None]:
        cursor, limit, prefix = check_page(cursor, limit, prefix)
        records, next_cursor = await self._meta("list_page", check_tenant(tenant), after=cursor, limit=limit,
                                                prefix=prefix)
        return self._creations.listed(records), next_cursor

    async def delete_memory(self, tenant: str, name: str) -> dict:
        """Unregister first (a stale actor's writes then fail), then stop the actor, then the objects."""
        qname = qualify(tenant, name)
        try:
            await self._meta("delete_memory", qname)
        except Busy:  # still being created: only a creation cut short is cleared here
            await self._creations.clear_abandoned(qname)
        else:
            await self._release(qname)
            self._rewrite_append_only_file_soon()
        return {"deleted": True, "name": name}

    def _rewrite_append_only_file_soon(self) -> None:
        """Have Redis rewrite its append-only file AOF_REWRITE_DELAY s from now, so a deleted
        memory's texts leave its disk too (they stayed in the file until Redis happened to
        rewrite it). One rewrite serves every delete of that window: a rewrite copies the whole
        dataset, and deleting 1,000 forks must not start 1,000 of them."""
        if self._aof_rewrite is not None and not self._aof_rewrite.done():
            return

        async def rewrite_later() -> None:
            await asyncio.sleep(AOF_REWRITE_DELAY)
            if self._router is not None:  # not closed meanwhile
                await self._meta("rewrite_append_only_file")

        self._aof_rewrite = asyncio.ensure_future(rewrite_later())

    async def _release(self, qname: str) -> None:
        """Stop the memory's actor and delete its checkpoint objects (its record is the caller's)."""
        self._routes().forget(qname)
        await self._supervisor.remove.remote(qname)
        store = self.storage.checkpoints
        for key in await asyncio.to_thread(store.list, f"{qname}/"):
            await asyncio.to_thread(store.delete, key)

    async def memory_config(self, tenant: str, name: str) -> dict:
        return (await self._meta("get_memory", qualify(tenant, name)))["config"]

    # ---- the memory's own calls -----------------------------------------------------------

    async def observe(self, tenant: str, name: str, vectors: np.ndarray, texts: list[str],
                      domain: str | None = None, learning_rate: float | None = None,
                      *, request_id: str | None = None, after_request_id: str | None = None,
                      batch: bool = False) -> dict:
        """Apply one write. `request_id` (default: fresh) makes a client's own retry idempotent;
        `after_request_id` names a write of this memory that must be applied first (it is
        waited for: a client may keep several writes in flight and keep their order). A batch
        (`batch`, or more than one text) is answered with one result per item in `items`."""
        request_id = contract.check_request_id(request_id) or uuid.uuid4().hex
        after = contract.check_after_request_id(after_request_id, request_id)
        qname, applied = qualify(tenant, name), False
        self._ordered.started(qname, request_id)
        try:
            result = await self._apply_in_order(tenant, name, request_id, after,
                                                (vectors, texts, domain, learning_rate))
            applied = True
        finally:
            self._ordered.ended(qname, request_id, applied)
        shaped = {key: result[key] for key in _OBSERVE_KEYS}
        shaped["repeated"] = bool(result.get("repeated"))  # the actor answered an earlier write's result
        surprises = result.get("surprises") or []  # a retry's are the first answer's
        # A retry of a write a forget renumbered: the steps observe first answered for its items
        # that are left (what a forget's `steps` selector names), not the renumbered ones.
        answered = result.get("answered")
        if answered:
            shaped["step"] = answered[-1]
        if (batch or len(texts) > 1) and surprises:  # a batch: one result per item, in order
            steps = answered or range(result["step"] - len(surprises) + 1, result["step"] + 1)
            shaped["items"] = [{"surprise": s, "step": step} for s, step in zip(surprises, steps)]
        return shaped

    async def _apply_in_order(self, tenant: str, name: str, request_id: str, after: str | None,
                              write: tuple) -> dict:
        """The actor's observe of `write` (vectors, texts, domain, learning_rate), once write
        `after` (if any) is applied. Waited for here (cluster.ordering), where a wait holds none
        of the actor's call slots; the actor only checks, and a predecessor it does not know
        after all sends the write back to wait, until NMEM_ORDERED_WRITE_WAIT_SECONDS in all."""
        qname, wait = qualify(tenant, name), self.settings.actor.ordered_write_wait_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if after is not None:
                await self._ordered.wait_for(qname, after, lambda: self._call(tenant, name, "has_applied", after),
                                             deadline, wait)
            try:
                return await self._call(tenant, name, "observe", request_id, *write, after, 0.0)
            except OutOfOrder:
                if after is None or loop.time() >= deadline:
                    raise out_of_order(after, qname, wait) from None
                self._ordered.not_applied(qname, after)

    async def surprise(self, tenant: str, name: str, vector: np.ndarray, text: str) -> dict:
        return await self._call(tenant, name, "surprise", vector, text)

    async def infer(self, tenant: str, name: str, vector: np.ndarray, prompt: str, top_k: int = 5,
                    temperature: float | None = None, max_tokens: int | None = None) -> dict:
        return await self._call(tenant, name, "infer", vector, top_k, temperature, max_tokens)

    async def attention_map(self, tenant: str, name: str, vector: np.ndarray, query: str) -> dict:
        return {"attention_weights": await self._call(tenant, name, "attention_map", vector)}

    async def consolidate(self, tenant: str, name: str) -> dict:
        return await self._call(tenant, name, "consolidate")

    async def explain(self, tenant: str, name: str, top_k: int = 5) -> dict:
        return {"patterns": await self._call(tenant, name, "explain", top_k)}

    async def stats(self, tenant: str, name: str) -> dict:
        stats = await self._call(tenant, name, "stats")
        return {key: stats[key] for key in _STATS_KEYS}

    async def history(self, tenant: str, name: str, limit: int = 200) -> dict:
        """The newest observations, newest last, including every write answered so far (a live
        actor writes its history in the background: flush it first)."""
        qname = qualify(tenant, name)
        await self._routes().call_if_live(qname, "flush_records")
        return {"observations": await self._meta("history", qname, limit)}

    # ---- checkpoints, restore, fork -------------------------------------------------------

    async def checkpoint(self, tenant: str, name: str, tag: str, description: str = "") -> dict:
        check_user_tag(tag)
        info = await self._call(tenant, name, "checkpoint", tag, str(description or ""))
        return {"checkpoint_id": f"{name}:{tag}", "size_mb": round(info["size"] / 1e6, 3),
                "weight_hash": info["weight_hash"]}

    async def list_checkpoints(self, tenant: str, name: str) -> dict:
        return {"checkpoints": _user_checkpoints(await self._meta("list_checkpoints", qualify(tenant, name)))}

    async def restore(self, tenant: str, name: str, tag: str) -> dict:
        check_user_tag(tag)
        return await self._call(tenant, name, "restore", tag)

    async def fork(self, tenant: str, name: str, new_name: str, source_tag: str | None = None) -> dict:
        """New memory `new_name` starting from `name`'s live state (or its checkpoint `source_tag`).
        Its first checkpoint is a copy of the source's manifest: no state bytes are copied."""
        source, target = qualify(tenant, name), qualify(tenant, new_name)
        record = await self._meta("get_memory", source)
        # A tag is read first (a missing one is named as such, at the quota too); the live state
        # is snapshot only once the fork may be made.
        info = await self._source_info(source, source_tag) if source_tag is not None else None
        await self._creations.check_free(target)
        await self._check_quota(tenant)
        for _attempt in range(FORK_ATTEMPTS):
            if info is None:
                info = await self._source_info(source, source_tag)
            child = {"tenant": tenant, "name": target, "config": record["config"], "encoder": record["encoder"],
                     "parent": source, "parent_created_at": record.get("created_at"),
                     "source_tag": source_tag, "source_seq": info.get("seq"),
                     "source_step": int(info["step"])}

            def seed(ckpts: Checkpoints, info: dict = info) -> dict:
                # The fork is registered before this runs: a forget that replaces the source
                # after the check below lists the fork in its report; one before it is caught.
                try:
                    copied = ckpts.copy_auto(info)
                except (CheckpointCorrupt, CheckpointNotFound) as exc:
                    self._check_source_current(source, info)
                    raise _damaged(source, source_tag, exc) from None
                self._check_source_current(source, info)
                return copied

            try:
                stats = await self._create_seeded(child, seed, info["weight_hash"])
            except _SourceReplaced:
                info = None
                continue  # undone: fork the state the forget left
            except CheckpointCorrupt as exc:  # copied fine, but its bytes do not load: name the source
                raise _damaged(source, source_tag, exc) from None
            return {"forked": True, "source_hash": info["weight_hash"], "new_hash": stats["weight_hash"]}
        raise Unavailable(f"memory {_short(source)} was rebuilt by forget jobs {FORK_ATTEMPTS} times while it "
                          "was being forked; nothing was created: retry")

    def _check_source_current(self, source: str, info: dict) -> None:
        """_SourceReplaced if `source`'s checkpoint `info` is no longer what its index names (a
        forget rebuilt or deleted it since it was read): a fork of it would hold what was forgotten."""
        try:
            current = self.storage.metadata.get_checkpoint(source, info["tag"])
        except CheckpointNotFound:
            raise _SourceReplaced from None
        if current["object_key"] != info["object_key"]:
            raise _SourceReplaced

    # ---- forgetting (cluster/forget.py) ------------------------------------------------------

    async def forget(self, tenant: str, name: str, request: dict, who: dict | None = None,
                     request_id: str | None = None) -> dict:
        """Start a forget job on memory `name` (request: selector, mode, dry_run, checkpoints,
        forks); its status as the job record says (poll `forget_status`). A retry with the same
        `request_id` gets the job the first call started."""
        return await self._forget.start(tenant, name, request, who or {}, request_id)

    async def forget_status(self, tenant: str, name: str, job_id: str) -> dict:
        return await self._forget.status(tenant, name, job_id)

    async def audit(self, tenant: str, limit: int = 100) -> dict:
        """The tenant's forget audit records, newest last."""
        return await self._forget.audit(check_tenant(tenant), limit)

    # ---- memory images: a memory's state out as bytes, and back in as a new memory ----------

    async def export_state(self, tenant: str, name: str, tag: str | None = None) -> ExportedState:
        """The checkpoint `tag` of memory `name`, or (no tag) a snapshot of its live state, as
        one blob (what `NeuralMemory.to_bytes` gives); the image file format around it is serve/'s."""
        qname = qualify(tenant, name)
        record = await self._meta("get_memory", qname)
        info = await self._source_info(qname, tag)
        try:
            parts = await asyncio.to_thread(Checkpoints(self.storage, qname).read_parts, info)
        except (CheckpointCorrupt, CheckpointNotFound) as exc:
            raise _damaged(qname, tag, exc) from None
        blob = await asyncio.to_thread(parts_to_blob, parts)
        # The full config (a record from before a field existed lacks it; its checkpoint has it).
        return ExportedState(normalize_config(record["config"]), info["weight_hash"], int(info["step"]), blob)

    async def import_state(self, tenant: str, name: str, state: ExportedState) -> dict:
        """Create memory `name` holding `state` (its config, encoder and weights); the loaded
        weights must hash to what the state promises."""
        qname = qualify(tenant, name)
        try:
            full = normalize_config(state.config)
        except InvalidInput as exc:
            raise IncompatibleState(f"this server cannot run the image's memory: {exc}") from None
        await self._creations.check_free(qname, hint="; import the image under another name")
        await self._check_quota(tenant)
        record = {"tenant": tenant, "name": qname, "config": full, "encoder": full["encoder"],
                  "parent": None, "source_tag": None}
        parts, held = await asyncio.to_thread(blob_to_parts, state.data)
        problems = _image_mismatches(full, state, held)
        if problems:  # the header is what the new memory would run with: it must be the checkpoint's
            raise IncompatibleState("the image's header does not match the checkpoint it carries: "
                                    + "; ".join(problems))
        # Position 0 of the new memory's log: it starts from the image as it is (see copy_auto).
        seed = lambda ckpts: ckpts.save_auto(parts, step=state.step, weight_hash=state.weight_hash, seq=0)  # noqa: E731
        try:
            stats = await self._create_seeded(record, seed, state.weight_hash)
        except CheckpointCorrupt as exc:  # the actor could not load the bytes
            raise IncompatibleState(f"this server cannot load the image's checkpoint: {exc}") from None
        return {"name": name, "weight_hash": stats["weight_hash"],
                "weight_parameters": stats["weight_parameters"], "step": int(stats["step"])}

    async def _source_info(self, qname: str, tag: str | None) -> dict:
        """Checkpoint `tag`'s index entry, or (no tag) a fresh auto-checkpoint of the live state."""
        if tag is not None:
            return await self._meta("get_checkpoint", qname, check_user_tag(tag))
        return await self._routes().call(qname, "snapshot")

    async def _create_seeded(self, record: dict, seed: Callable[[Checkpoints], dict] | None,
                             weight_hash: str | None = None) -> dict:
        """Register `record`, write its first auto-checkpoint with `seed` (none: the actor writes
        the config's initial state) and start it; its stats. The record is marked as being
        created until then, and nothing is left behind if any step fails (cluster/creating.py;
        the weights must load to `weight_hash`)."""
        qname = record["name"]
        try:
            registered = await self._creations.register(record, self.settings.max_memories_per_tenant)
        except QuotaExceeded:
            raise self._over_quota() from None
        # undone before another create may take the name over as stale
        deadline = asyncio.timeout(self._creations.deadline)
        seeding: asyncio.Future | None = None
        try:
            async with deadline:
                if seed is not None:
                    seeding = asyncio.ensure_future(asyncio.to_thread(seed, Checkpoints(self.storage, qname)))
                    await asyncio.shield(seeding)
                handle, stats = await self._routes().start(qname)
                if weight_hash is not None and stats["weight_hash"] != weight_hash:
                    raise IncompatibleState(f"the loaded weights hash to {stats['weight_hash'][:12]} here, "
                                            f"not {weight_hash[:12]} as the source says")
                await self._creations.finish(registered)
        except BaseException:
            # Shielded: a second cancel (a shutdown) must not leave the name marked; the seed
            # thread cannot be stopped, so the clean-up waits for it (see `abandon`).
            await asyncio.shield(self._creations.abandon(registered, pending=seeding))
            if deadline.expired():
                raise Unavailable(f"creating memory {shown(qname)} took over {self._creations.deadline:.0f} s "
                                  "and was undone: retry") from None
            raise
        self._routes().adopt(qname, handle)
        return stats

    # ---- views ------------------------------------------------------------------------------

    async def lineage(self, tenant: str, cursor: str | None = None, limit: int = DEFAULT_PAGE,
                      prefix: str | None = None) -> dict:
        """Fork edges of one page of memories (paged like list_memories)."""
        records, next_cursor = await self._page(tenant, cursor, limit, prefix)
        live = set(await self._supervisor.live.remote())
        # Each memory's checkpoints come along (one Redis round trip for the page): the tree
        # shows them, and a dashboard that asked for them one memory at a time spent 51 calls
        # of its key's rate limit per refresh.
        checkpoints = await self._meta("list_checkpoints_of", [r["name"] for r in records])
        return {"memories": [{"name": _short(r["name"]), **_parent_of(r), "source_tag": r.get("source_tag"),
                 "created_at": r.get("created_at"), "live": r["name"] in live, "being_created": r["being_created"],
                 "checkpoints": _user_checkpoints(checkpoints[r["name"]])} for r in records],
                "next_cursor": next_cursor}

    async def health(self, timeout: float = 3.0) -> dict[str, str]:
        """Each dependency: "ok", "timed out" or "unavailable" (details in the log, not here)."""
        probes = {"metadata": self._meta("ping"),
                  "checkpoints": asyncio.to_thread(self.storage.check_checkpoints),
                  "actors": self._supervisor.count.remote()}
        answers = await asyncio.gather(*(asyncio.wait_for(p, timeout) for p in probes.values()),
                                       return_exceptions=True)
        report = {}
        for name, answer in zip(probes, answers):
            if isinstance(answer, asyncio.TimeoutError):
                report[name] = "timed out"
            elif isinstance(answer, BaseException):
                log.warning("health: %s failed: %r", name, answer)
                report[name] = "unavailable"
            else:
                report[name] = "ok"
        return report

    async def live_actor_count(self) -> int:
        return await self._supervisor.count.remote()

    async def hibernate(self, tenant: str, name: str) -> bool:
        """Checkpoint and stop this memory's actor now (tests, benchmarks, admin)."""
        qname = qualify(tenant, name)
        self._routes().forget(qname)
        try:
            return await self._supervisor.hibernate.remote(qname)
        except ray.exceptions.RayTaskError as exc:
            raise unwrap(exc) from None
