"""Translate redis-py, botocore and OS errors into our error tree at the storage boundary.

    redis.RedisError (any)                       -> MetadataError (message names the server)
    botocore ClientError 404 / NoSuchKey         -> CheckpointNotFound
    ClientError 412 / 404 / 409 on a create-only write -> CheckpointConflict
    ClientError 401 / 403, bad signature or key  -> CheckpointError ("check the credentials")
    no credentials, unreachable, timeouts, other -> CheckpointError (message names the endpoint)
    OSError in the local store                   -> CheckpointError (message names the path)

Adapters raise `translate_*(exc, ...) from exc` so the original stays in `__cause__`.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import redis
from botocore import exceptions as boto_exc

from errors import CheckpointConflict, CheckpointError, CheckpointNotFound, MetadataError

__all__ = [
    "redacted_url",
    "translate_redis",
    "translate_s3",
    "translate_os",
    "redis_errors",
]

_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "AllAccessDisabled",
}
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_UNREACHABLE = (
    boto_exc.EndpointConnectionError,
    boto_exc.ConnectTimeoutError,
    boto_exc.ReadTimeoutError,
    boto_exc.ConnectionClosedError,
    boto_exc.HTTPClientError,
)


def redacted_url(url: str) -> str:
    """`url` with any password replaced by '***', safe to put in error messages and logs; a
    malformed one (say, `redis//:pw@host`, no scheme) with everything before an `@` masked."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        return re.sub(r"^[^@]*@", "***@", url) if "@" in url else url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def translate_redis(exc: redis.RedisError, where: str) -> MetadataError:
    """Map any redis-py error to MetadataError; `where` is the (redacted) server URL."""
    if isinstance(exc, redis.AuthenticationError):
        hint = "refused the credentials; check the user/password in NMEM_REDIS_URL"
    elif isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        hint = "is unreachable or did not answer in time"
    elif isinstance(exc, redis.ResponseError):
        hint = "rejected a command"
    else:
        hint = "failed"
    return MetadataError(f"Redis/Valkey at {where} {hint}: {type(exc).__name__}: {exc}")


@contextmanager
def redis_errors(where: str) -> Iterator[None]:
    """Run a block of redis-py calls, re-raising their errors as MetadataError."""
    try:
        yield
    except redis.RedisError as exc:
        raise translate_redis(exc, where) from exc


def _client_error(exc: boto_exc.ClientError, endpoint: str, what: str, conditional: bool) -> CheckpointError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    detail = f"{code or status}: {error.get('Message', '')}".strip()
    if conditional and (status in (404, 409, 412) or code in _CONFLICT_CODES):
        # Create-only write lost: MinIO answers 404, AWS/SeaweedFS 412, AWS 409 mid-race.
        return CheckpointConflict(f"checkpoint {what} already exists on S3 at {endpoint}")
    if code in _AUTH_CODES or status in (401, 403):
        return CheckpointError(
            f"S3 at {endpoint} refused the credentials for {what} ({detail}); "
            "check NMEM_S3_ACCESS_KEY / NMEM_S3_SECRET_KEY and the bucket policy"
        )
    if code == "NoSuchBucket":
        return CheckpointError(f"S3 at {endpoint}: bucket for {what} does not exist ({detail})")
    if code in _NOT_FOUND_CODES or status == 404:
        return CheckpointNotFound(f"checkpoint {what} not found on S3 at {endpoint}")
    return CheckpointError(f"S3 at {endpoint} failed on {what} ({detail})")


def translate_s3(
    exc: Exception, endpoint: str, what: str, *, conditional: bool = False
) -> CheckpointError:
    """Map a botocore error to our tree. `what` names the object; `conditional` = create-only write."""
    if isinstance(exc, boto_exc.ClientError):
        return _client_error(exc, endpoint, what, conditional)
    if isinstance(exc, (boto_exc.NoCredentialsError, boto_exc.PartialCredentialsError)):
        return CheckpointError(
            f"no usable S3 credentials for {endpoint}; set NMEM_S3_ACCESS_KEY and NMEM_S3_SECRET_KEY"
        )
    if isinstance(exc, _UNREACHABLE):
        return CheckpointError(f"S3 at {endpoint} is unreachable or timed out on {what}: {exc}")
    return CheckpointError(f"S3 at {endpoint} failed on {what}: {type(exc).__name__}: {exc}")


def translate_os(exc: OSError, root: str, what: str) -> CheckpointError:
    """Map a filesystem error of the local store to CheckpointError naming the path."""
    if isinstance(exc, FileNotFoundError):
        return CheckpointNotFound(f"checkpoint {what} not found in {root}")
    if isinstance(exc, FileExistsError):
        return CheckpointConflict(f"checkpoint {what} already exists in {root}")
    return CheckpointError(f"local checkpoint store {root} failed on {what}: {exc}")
