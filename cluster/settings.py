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

    model_config = SettingsConfigDict(env_prefix="NMEM_", extra="ignore")

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
                    "hibernated to make room. Each torch actor costs ~180 MB, so size this to the cluster's "
                    "memory."
    )
    idle_seconds: float = Field(
        600.0, gt=0,
        description="An actor unused for this long checkpoints and exits; the next call rehydrates it."
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
        1, ge=0, le=64,
        description="Warm spare actors kept ready (torch imported, storage open, no memory yet). A fork, "
                    "rehydration or recovery binds one instead of starting a process: ~0.1 s instead of "
                    "~3.5 s on 2 cores; a replacement then warms up in the background (~3 CPU-seconds). "
                    "Each spare costs one idle actor's memory (~190 MB USS), on top of max_live_actors. 0 "
                    "turns them off."
    )
    max_memories_per_tenant: int = Field(
        1000, ge=1, le=10_000_000,
        description="Memories one tenant may have; create, fork and image import beyond it are "
                    "refused with 429 (checked before each, so a burst of concurrent creates may "
                    "pass it by a few)."
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
