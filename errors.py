"""The one exception tree of Neural Memory Cluster.

It lives in this root module, beside `contract`, below every package: each package imports it
and it imports nothing of ours. Only `serve/` turns these into HTTP statuses or MCP tool errors.

    NeuralMemoryError
    ├── InvalidInput              bad argument from a caller (text, name, number); 400/422
    ├── NotFound                  404
    │   ├── MemoryNotFound
    │   └── CheckpointNotFound    (also a CheckpointError)
    ├── AlreadyExists             409
    │   ├── MemoryExists
    │   └── RequestIdReused       a write's `request_id` names an earlier, different write
    ├── OutOfOrder                409: a write's predecessor (`after_request_id`) was not applied
    ├── IncompatibleState         a state made with another encoder, dim or format version
    ├── StorageError              a backing service failed or misbehaved; 503
    │   ├── MetadataError         Redis/Valkey
    │   └── CheckpointError       S3 / local checkpoint store
    │       ├── CheckpointNotFound
    │       ├── CheckpointCorrupt   stored bytes fail their hash or cannot be decoded
    │       └── CheckpointConflict  a create-only write lost the race (tag already taken)
    ├── AuthError                 401: no or unknown API key
    ├── Forbidden                 403
    ├── LimitExceeded             429, with a `retry_after` (seconds; None for a quota)
    │   ├── RateLimited           too many requests for one API key
    │   └── QuotaExceeded         a tenant's cap (e.g. memories) is reached
    └── Unavailable               503: the memory's actor could not be reached or started
        ├── Busy                  doing the one thing of its kind it does at a time (a forget job)
        └── Superseded            this actor's hold on the memory passed to a newer actor
"""

from __future__ import annotations

__all__ = [
    "NeuralMemoryError",
    "InvalidInput",
    "PayloadTooLarge",
    "NotFound",
    "MemoryNotFound",
    "AlreadyExists",
    "MemoryExists",
    "RequestIdReused",
    "OutOfOrder",
    "IncompatibleState",
    "StorageError",
    "MetadataError",
    "CheckpointError",
    "CheckpointNotFound",
    "CheckpointCorrupt",
    "CheckpointConflict",
    "AuthError",
    "Forbidden",
    "LimitExceeded",
    "RateLimited",
    "QuotaExceeded",
    "Unavailable",
    "Busy",
    "Superseded",
]


class NeuralMemoryError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidInput(NeuralMemoryError, ValueError):
    """A caller passed a bad argument; the message says what to fix."""


class PayloadTooLarge(InvalidInput):
    """The request body is over the server's size limit (the message names it)."""


class NotFound(NeuralMemoryError, LookupError):
    """Something named by the caller does not exist."""


class MemoryNotFound(NotFound):
    """No memory with that name (in the caller's tenant)."""


class AlreadyExists(NeuralMemoryError):
    """Something the caller asked to create already exists."""


class MemoryExists(AlreadyExists):
    """A memory with that name already exists."""


class RequestIdReused(AlreadyExists):
    """A write carried the `request_id` of an earlier write of this memory with other texts,
    domain or learning rate: nothing of it was applied (a retry must repeat its write exactly;
    a new write needs a new id)."""


class OutOfOrder(NeuralMemoryError):
    """A write named the write it must follow (`after_request_id`), and that one was not
    applied in time: nothing of this write was applied. Send the earlier one (again) first."""


class IncompatibleState(NeuralMemoryError):
    """Serialized state cannot be loaded here: other encoder, dim, or format version."""


class StorageError(NeuralMemoryError):
    """A backing store (Redis/Valkey, S3, local disk) failed."""


class MetadataError(StorageError):
    """The metadata store (Redis/Valkey) failed or is unreachable."""


class CheckpointError(StorageError):
    """The checkpoint store failed or is unreachable."""


class CheckpointNotFound(CheckpointError, NotFound):
    """No checkpoint object (or tag) with that name."""


class CheckpointCorrupt(CheckpointError):
    """Stored checkpoint bytes fail their hash check or cannot be decoded."""


class CheckpointConflict(CheckpointError, AlreadyExists):
    """A create-only write found the object (or tag) already there."""


class AuthError(NeuralMemoryError):
    """Missing or unknown API key."""


class Forbidden(NeuralMemoryError):
    """The key is valid but may not do this."""


class LimitExceeded(NeuralMemoryError):
    """A limit refused the call; the message names the limit. Retry after `retry_after` seconds
    (None: waiting alone will not lift it, e.g. a quota until something is deleted)."""

    def __init__(self, message: str, retry_after: float | None = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple:  # keep retry_after across Ray's pickling
        return (type(self), (str(self), self.retry_after))


class RateLimited(LimitExceeded):
    """Too many requests with one API key; slow down."""


class QuotaExceeded(LimitExceeded):
    """A tenant's quota (e.g. NMEM_MAX_MEMORIES_PER_TENANT) is used up: no Retry-After, since
    only a deletion frees it (a client honouring one would loop)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after)


class Unavailable(NeuralMemoryError):
    """A memory's actor could not be reached or (re)started in time."""


class Busy(Unavailable):
    """The memory is reachable but already doing the one thing of this kind it does at a time
    (a forget job): retry once that is done. Unlike a memory being recovered, waiting inside
    the call would not help, so it is answered at once (503, Retry-After)."""


class Superseded(Unavailable):
    """Another actor has taken the memory since this one did (this one was killed or given up
    for dead and a successor rebuilt the memory from its log): nothing of the write was logged
    or applied. Callers retry on the successor, as for any memory being recovered."""
