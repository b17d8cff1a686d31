"""ClusterSettings: where Ray is, how many memory actors may live, and when they sleep.

Every field can be set as `NMEM_<FIELD>` in the environment; storage and the actors have their
own settings (`StorageSettings`, `ActorSettings`, same prefix, next to their code) nested here,
so one object configures the whole control plane. The environment is read when a
`ClusterSettings()` is built, i.e. once, by the entry point (`build_app`, `neural-memory serve`,
or a program constructing `MemoryCluster()`); the object is then passed down as it is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from actors import ActorSettings
from storage import StorageSettings

__all__ = ["ClusterSettings"]


class ClusterSettings(BaseSettings):
    """Settings for `MemoryCluster`."""

    model_config = SettingsConfigDict(env_prefix="NMEM_", extra="ignore", allow_inf_nan=False)

    ray_address: str | None = Field(
        None,
        description="Ray cluster to join (\"auto\", \"ray://head:10001\", ...). None = start a local Ray if "
                    "none runs."
    )
    namespace: str = Field(
        "neural-memory",
        description="Ray namespace of the supervisor and every memory actor of this deployment."
    )
    max_live_actors: int = Field(
        32, ge=1, le=100_000,
        description="Cap on live memory actors in the whole deployment; the least recently used is "
                    "hibernated to make room. Each torch actor costs ~180 MB empty and ~300 MB holding a "
                    "5,000-observation memory (PSS), so size this to the cluster's memory."
    )
    idle_seconds: float = Field(
        600.0, gt=0,
        description="A memory unused for this long hibernates (its short WAL tail or a checkpoint stays behind) "
                    "and hands its process back; the next call rehydrates it."
    )
    actor_max_concurrency: int = Field(
        8, ge=2, le=256,
        description="Concurrent calls one memory actor serves (writes still go one at a time)."
    )
    actor_num_cpus: float = Field(
        0.0, ge=0,
        description="CPUs reserved per memory actor. 0: actors are mostly idle, so they share cores freely."
    )
    actor_placement: Literal["spread", "pack"] = Field(
        "spread",
        description="\"spread\": place memory actors across nodes (node loss takes fewer memories down); "
                    "\"pack\": Ray's default placement."
    )
    actor_start_timeout: float = Field(
        120.0, gt=0,
        description="Longest wait for an actor to start or hibernate before the call fails with "
                    "Unavailable."
    )
    spare_actors: int = Field(
        1, ge=0, le=256,
        description="Warm idle actor processes kept ready (torch imported, storage open, no memory yet), as "
                    "many as fit under the process bound (max_live_actors + spare_actors_max). A create, fork "
                    "or wake-up binds one instead of starting a process: ~0.1 s instead of ~3.5 s on 2 cores; "
                    "a replacement then warms up in the background (~3 CPU-seconds, ~190 MB). Set it to the "
                    "live cap to have every live slot's process ready before a burst. 0 turns them off."
    )
    spare_actors_max: int = Field(
        4, ge=0, le=256,
        description="Processes allowed beyond the live cap: live plus idle processes never exceed "
                    "max_live_actors + this. A memory that hibernates (idle, or evicted at the cap) hands its "
                    "process back instead of exiting, so a burst of forks or wake-ups binds processes that "
                    "already imported torch; idle ones beyond spare_actors exit after spare_idle_seconds."
    )
    spare_idle_seconds: float = Field(
        60.0, gt=0,
        description="A reusable process beyond spare_actors exits after this long unused (the pool shrinks "
                    "after a burst)."
    )
    reuse_idle_seconds: float = Field(
        2.0, ge=0,
        description="A start that finds no warm process takes the process of the least recently used "
                    "memory idle at least this long (it hibernates; waking it later costs ~0.1 s) instead "
                    "of waiting ~3 s for a new one. 0: never."
    )
    max_concurrent_starts: int = Field(
        4, ge=1, le=256,
        description="Memory starts (bind + checkpoint load + WAL replay) running at once; more wait in "
                    "per-tenant queues served in turns, so one tenant's burst cannot stall the others."
    )
    gc_interval_seconds: float = Field(
        3600.0, ge=0,
        description="How often the supervisor deletes checkpoint chunks that no manifest names (0: never; "
                    "`neural-memory gc` runs it by hand)."
    )
    gc_grace_seconds: float = Field(
        900.0, ge=60,
        description="Chunks written or reused more recently than this are never collected, which covers "
                    "checkpoints being written while the collector runs."
    )
    max_memories_per_tenant: int = Field(
        10_000, ge=1, le=10_000_000,
        description="Memories one tenant may have (room for a base and a fork per user of a platform "
                    "of 10,000 users); create, fork and image import beyond it are refused with 429 "
                    "quota_exceeded, without Retry-After since only a deletion frees room (checked in the "
                    "same step as the registration, so concurrent creates never pass it)."
    )
    storage: StorageSettings = Field(
        default_factory=StorageSettings,
        description="Storage (Redis/Valkey + checkpoints); see storage.StorageSettings."
    )
    actor: ActorSettings = Field(
        default_factory=ActorSettings,
        description="Every memory actor's checkpointing, request memory and threads; see "
                    "actors.ActorSettings."
    )

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError(f"NMEM_NAMESPACE {value!r} must be 1-64 letters, digits, '-', '_' or '.'")
        return value
