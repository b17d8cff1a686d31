"""open_storage: turn StorageSettings into a connected Storage (metadata + checkpoints).

With no redis_url it starts an EmbeddedValkey in data_dir/valkey; with no s3_endpoint it
uses a LocalCheckpointStore in data_dir/checkpoints. `Storage.settings` is the *resolved*
settings (redis_url filled in, data_dir absolute): hand that to other processes (Ray
actors) so their `open_storage` connects to the same server instead of starting another.
Pickling a Storage does exactly that.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from storage.cas import ContentStore
from storage.checkpoints import CheckpointStore
from storage.embedded import EmbeddedValkey, private_dir
from storage.local import LocalCheckpointStore
from storage.metadata import MetadataStore
from storage.s3 import S3CheckpointStore
from storage.settings import StorageSettings

__all__ = ["Storage", "open_storage"]

log = logging.getLogger(__name__)

# Readiness writes (and deletes) this object: a HEAD, or a check of the folder's mode, said
# "ok" on a full disk or with the bucket deleted, while every checkpoint failed.
PROBE_BYTES = b"neural-memory readiness probe\n" * 128  # 4 KiB: a write that needs disk blocks


@dataclass
class Storage:
    """A connected metadata store and checkpoint store; `close()` when done."""

    settings: StorageSettings  # resolved: safe to send to another process
    metadata: MetadataStore
    checkpoints: CheckpointStore
    # The Valkey this Storage started (and stops on close); None when connecting to a URL.
    embedded: EmbeddedValkey | None = field(default=None, repr=False)
    # Checkpoints as manifests over shared chunks (storage/cas.py), on the two stores above.
    content: ContentStore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.content = ContentStore(self.checkpoints, self.metadata, self.settings.chunk_cache_mb * 2**20)
        self._probe_key = f"health-probe-{uuid.uuid4().hex}"  # one per process: replicas probe at once

    @property
    def redis_url(self) -> str:
        """URL of the metadata server (the embedded one's, once started)."""
        return str(self.settings.redis_url)  # open_storage always fills it in

    def check_checkpoints(self) -> None:
        """Raise CheckpointError unless a checkpoint can be written now (readiness probes): a
        small object is written and deleted (a full disk, a deleted bucket or refused
        credentials fail it)."""
        if isinstance(self.checkpoints, S3CheckpointStore):
            self.checkpoints.check_bucket()
        self.checkpoints.put(self._probe_key, PROBE_BYTES)
        self.checkpoints.delete(self._probe_key)

    def close(self) -> None:
        """Close connections; stop the embedded Valkey if this Storage started it."""
        try:
            self.content.close()
            self.metadata.close()
            self.checkpoints.close()
        finally:
            if self.embedded is not None:
                self.embedded.stop()
                self.embedded = None

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple:
        # Another process gets its own connections to the same servers, never a second Valkey.
        return (open_storage, (self.settings,))


def _checkpoint_store(settings: StorageSettings) -> CheckpointStore:
    if settings.s3_endpoint is None:
        return LocalCheckpointStore(settings.checkpoint_dir)
    store = S3CheckpointStore.from_settings(settings)
    store.ensure_bucket()  # fail at startup, naming the endpoint, not at the first checkpoint
    return store


def open_storage(settings: StorageSettings | None = None) -> Storage:
    """Connect to (or start) everything `settings` names; raises StorageError naming what failed."""
    settings = settings if settings is not None else StorageSettings()
    data_dir = settings.data_dir.expanduser().resolve()
    settings = settings.model_copy(update={"data_dir": data_dir})
    if settings.redis_url is None or settings.s3_endpoint is None:
        private_dir(data_dir)  # holds every tenant's data: 0700
    embedded = None
    if settings.redis_url is None:
        embedded = EmbeddedValkey(settings.valkey_dir)
        settings = settings.model_copy(update={"redis_url": embedded.start()})
    metadata = None
    try:
        metadata = MetadataStore.from_settings(settings)
        metadata.ping()
        if embedded is None and metadata.keeps_a_log() is False:
            log.warning("the Redis at %s keeps no append-only file (appendonly no): the write-ahead log and "
                        "every acknowledged write since the last checkpoints are lost if it restarts; set "
                        "appendonly yes (README: 'Production settings')", metadata.where)
        checkpoints = _checkpoint_store(settings)
    except BaseException:
        if metadata is not None:
            metadata.close()
        if embedded is not None:
            embedded.stop()
        raise
    return Storage(settings=settings, metadata=metadata, checkpoints=checkpoints, embedded=embedded)

