"""ActorSettings: how each memory actor checkpoints, remembers requests and uses threads.

Every field can be set as `NMEM_<FIELD>` in the environment; the entry point reads them once
(inside `ClusterSettings`) and the control plane hands the object to every actor it starts.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ActorSettings"]


class ActorSettings(BaseSettings):
    """Settings of every memory actor (`MemoryActor`)."""

    model_config = SettingsConfigDict(env_prefix="NMEM_", extra="ignore", frozen=True, allow_inf_nan=False)

    checkpoint_every_writes: int = Field(
        200, ge=1, description="Auto-checkpoint after this many writes since the last one; the WAL "
                               "is trimmed behind each auto-checkpoint, so this bounds recovery time.")
    checkpoint_every_observations: int = Field(
        4096, ge=1, description="...or after this many observations since the last one (a batch write counts "
                                "each item): replaying the log costs ~0.3 ms per observation on 2 cores, so "
                                "this bounds the recovery time of a memory fed in batches.")
    checkpoint_every_seconds: float = Field(
        60.0, gt=0, description="...or once this many seconds have passed with a WAL tail longer than "
                                "wal_tail_writes / wal_tail_observations unsaved.")
    wal_tail_writes: int = Field(
        32, ge=0, description="Unsaved writes a memory keeps as a WAL tail (replayed in milliseconds when it "
                              "wakes) instead of checkpointing when it hibernates or its seconds run out: a "
                              "memory that learned a little costs its log, not a new ~4 MB checkpoint. 0: "
                              "always checkpoint on hibernation.")
    wal_tail_observations: int = Field(
        256, ge=0, description="...and at most this many unsaved observations (a batch write counts each "
                               "item), so a wake-up replays ~0.1 s at most; a longer tail is checkpointed.")
    keep_auto_checkpoints: int = Field(
        2, ge=1, le=100, description="Auto-checkpoints kept per memory: the newest is what recovery "
                                     "loads, older ones are fallbacks if it is corrupt (the WAL is kept back to the oldest).")
    torch_threads: int = Field(
        1, ge=1, le=64, description="torch threads per memory actor: many actors share few cores, so "
                                   "one each avoids oversubscription.")
    history_retention: str = Field(
        "all", pattern=r"^(all|none|[1-9][0-9]{0,4}d)$",
        description="History kept so a memory can forget exactly (replay without the forgotten "
                    "observations): \"all\" (default: every observation can be erased exactly, for "
                    "~1.6 KB of object storage per observation with 384-dim vectors), \"<N>d\" (at least the last N days, at most "
                    "~2N; older ones can only be forgotten approximately) or \"none\" (only what is "
                    "still in the WAL).")
    ordered_write_wait_seconds: float = Field(
        30.0, gt=0, le=600, description="How long a write that names the write it must follow "
                                        "(after_request_id) waits for that one to be applied before "
                                        "it is refused (409 out_of_order, nothing applied).")
    remembered_requests: int = Field(
        4096, ge=1, le=1_000_000, description="Writes remembered per memory by request id, with their answers "
                                             "(in the actor, and in Redis, so across hibernation and restarts), "
                                             "so a retried write is answered, not applied twice. A retry of an "
                                             "older write is applied again. Redis holds about 250 bytes per "
                                             "remembered write, plus 9 per item of a batch and the texts of the "
                                             "patterns its answer names.")
