"""Durable state of Neural Memory Cluster: Redis metadata + write-ahead log, checkpoint stores.

    from storage import StorageSettings, open_storage
    with open_storage(StorageSettings()) as storage:   # embedded Valkey + local dir by default
        storage.metadata.create_memory("acme/notes", {...})
        storage.content.write("acme/notes/v1.ckpt", {"state": state_bytes})  # shared chunks

Imports nothing of ours but `errors`; connects to nothing until open_storage / a store is used.
"""

from storage.cas import ContentStore
from storage.checkpoints import CheckpointStore
from storage.embedded import EmbeddedValkey
from storage.factory import Storage, open_storage
from storage.keys import Keys, check_name, check_tag, memory_not_found, object_key, shown, superseded
from storage.local import LocalCheckpointStore
from storage.metadata import MetadataStore
from storage.registry_pages import is_fork_of
from storage.s3 import S3CheckpointStore
from storage.settings import StorageSettings

__all__ = [
    "StorageSettings",
    "Storage",
    "open_storage",
    "EmbeddedValkey",
    "CheckpointStore",
    "ContentStore",
    "S3CheckpointStore",
    "LocalCheckpointStore",
    "MetadataStore",
    "Keys",
    "object_key",
    "check_name",
    "check_tag",
    "memory_not_found",
    "superseded",
    "is_fork_of",
    "shown",
]
