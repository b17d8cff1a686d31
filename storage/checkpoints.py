"""The checkpoint store protocol: create-only blobs, verified on every read.

Implementations: `LocalCheckpointStore` (storage/local.py, the embedded default) and
`S3CheckpointStore` (storage/s3.py). Both store each object in the frame of storage/codec.py,
so `get` either returns exactly the bytes `put` was given or raises CheckpointCorrupt.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from errors import CheckpointCorrupt, InvalidInput

__all__ = ["CheckpointStore", "check_key", "check_expected_sha"]

_MAX_KEY = 900  # S3 allows 1024 bytes; leave room for a deployment prefix.


@runtime_checkable
class CheckpointStore(Protocol):
    """A place for serialized memories. Keys look like "tenant/memory/tag.ckpt"."""

    def put(self, key: str, data: bytes) -> dict:
        """Store `data` under a new `key`; returns {"key", "sha256", "size"}.

        Create-only: raises CheckpointConflict if `key` exists, also when two writers race.
        """
        ...

    def get(self, key: str, sha256: str | None = None) -> bytes:
        """The bytes stored under `key`, after checking their hash (and `sha256`, if given).

        Raises CheckpointNotFound, or CheckpointCorrupt for altered or truncated objects.
        """
        ...

    def exists(self, key: str) -> bool:
        """True if an object is stored under `key`."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing key is not an error."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix`, sorted."""
        ...

    def describe(self) -> str:
        """Where objects go, for logs and error messages (never includes secrets)."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise InvalidInput.

    The same key becomes a file path in the local store, so '..', absolute paths and empty
    segments are refused everywhere; '.tmp-' names are reserved for in-flight local writes.
    """
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
        raise InvalidInput(f"checkpoint key must be a non-empty string of at most {_MAX_KEY} characters")
    if any(ord(c) < 32 or c in "\\\x7f" for c in key):
        raise InvalidInput(f"checkpoint key {key!r} contains a control character or backslash")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or segment.startswith(".tmp-"):
            raise InvalidInput(
                f"checkpoint key {key!r} must be a relative path like 'tenant/memory/tag.ckpt' "
                "with no empty, '.', '..' or '.tmp-' segments"
            )
    return key


def check_expected_sha(key: str, actual: str, expected: str | None) -> None:
    """Raise CheckpointCorrupt if the caller's recorded sha256 differs from the object's."""
    if expected is not None and actual != expected.lower():
        raise CheckpointCorrupt(
            f"checkpoint {key} has sha256 {actual[:16]}..., but its index records {expected[:16]}...: "
            "the object was replaced or the index is stale"
        )
