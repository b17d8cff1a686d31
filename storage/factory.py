"""open_storage: turn StorageSettings into a connected Storage (metadata + checkpoints).

With no redis_url it starts an EmbeddedValkey in data_dir/valkey; with no s3_endpoint it
uses a LocalCheckpointStore in data_dir/checkpoints. `Storage.settings` is the *resolved*
settings (redis_url filled in, data_dir absolute): hand that to other processes (Ray
actors) so their `open_storage` connects to the same server instead of starting another.
Pickling a Storage does exactly that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from errors import CheckpointError

from storage.cas import ContentStore
from storage.checkpoints import CheckpointStore
from storage.embedded import EmbeddedValkey, private_dir
from storage.local import LocalCheckpointStore
from storage.metadata import MetadataStore
from storage.s3 import S3CheckpointStore
from storage.settings import StorageSettings

__all__ = ["Storage", "open_storage"]

_PROBE_KEY = "nmem-health-probe"  # never written: checking for it only proves S3 answers


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

    @property
    def redis_url(self) -> str:
        """URL of the metadata server (the embedded one's, once started)."""
        return str(self.settings.redis_url)  # open_storage always fills it in

    def check_checkpoints(self) -> None:
        """Raise CheckpointError unless the checkpoint store can be used (readiness probes)."""
        store = self.checkpoints
        if isinstance(store, LocalCheckpointStore):
            root = store.root if store.root.exists() else store.root.parent
            if not os.access(root, os.W_OK | os.X_OK):
                raise CheckpointError(f"local checkpoint store {store.root} is not writable")
        else:
            store.exists(_PROBE_KEY)  # a HEAD: answers False, or raises when S3 is down

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
        checkpoints = _checkpoint_store(settings)
    except BaseException:
        if metadata is not None:
            metadata.close()
        if embedded is not None:
            embedded.stop()
        raise
    return Storage(settings=settings, metadata=metadata, checkpoints=checkpoints, embedded=embedded)

