"""Our exception tree -> HTTP status + `{"error": {"code", "message", "request_id"}}`, and back.

Only serve/ turns errors into statuses. The table is ordered most specific first and matched
with isinstance, because the tree has diamonds (CheckpointNotFound is both a StorageError and
a NotFound: it must be a 404, not a 503). `code` is the class name in snake_case, so clients
can tell memory_not_found from checkpoint_not_found.

What a client reads never holds an internal address or a server path: a backing service's
failure (5xx) is told in fixed words, with the request id under which the details went to the
server log; 4xx messages keep their wording with any URL, IP address or absolute path masked.
503 and 429 carry Retry-After. The reverse direction lets the stdio MCP proxy raise the same
exceptions the in-process tools would.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import errors as E

logger = logging.getLogger(__name__)

# (class, HTTP status), most specific first.
STATUS_TABLE: list[tuple[type[BaseException], int]] = [
    (E.CheckpointNotFound, 404),
    (E.CheckpointConflict, 409),
    (E.CheckpointCorrupt, 422),  # stored state that cannot be used; the message names it
    (E.PayloadTooLarge, 413),
    (E.InvalidInput, 400),
    (E.NotFound, 404),
    (E.AlreadyExists, 409),
    (E.OutOfOrder, 409),
    (E.IncompatibleState, 422),
    (E.AuthError, 401),
    (E.Forbidden, 403),
    (E.LimitExceeded, 429),
    (E.StorageError, 503),
    (E.Unavailable, 503),
    (E.NeuralMemoryError, 500),
]

_ERROR_CLASSES = {
    name: getattr(E, name) for name in E.__all__ if isinstance(getattr(E, name), type)
}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _ray_unavailable(exc: BaseException) -> bool:
    """Ray's own failures (actor died, timeouts, backpressure) mean 'try again', not 'bug'."""
    module = type(exc).__module__
    if not (module.startswith("ray.") or module == "ray"):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names
        & {
            "RayActorError",
            "ActorDiedError",
            "ActorUnavailableError",
            "GetTimeoutError",
            "BackPressureError",
            "DeploymentUnavailableError",
            "RaySystemError",
            "ObjectLostError",
            "OutOfMemoryError",  # Ray's memory monitor killed a worker: retry once memory frees
            "WorkerCrashedError",
            "NodeDiedError",
        }
    )


# Fixed words for failures whose own message names servers, endpoints or paths.
PUBLIC_MESSAGES: list[tuple[type[BaseException], str]] = [
    (E.MetadataError, "the metadata store (Redis/Valkey) is unavailable; retry shortly"),
    (E.CheckpointError, "the checkpoint store is unavailable; retry shortly"),
    (E.StorageError, "a storage service is unavailable; retry shortly"),
]
RETRY_AFTER_S = 2  # what a 503 tells clients to wait: an embedded Valkey restarts within ~1 s
_INTERNAL = re.compile(
    r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+"  # URLs (redis://, http://, s3://, ...)
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"  # IPv4 addresses, with a port
    r"|(?<![\w.~-])(?!/v1/)/[^\s'\"<>(),;/]+/[^\s'\"<>(),;]+"  # absolute paths (not API routes)
)


@dataclass(frozen=True)
class Problem:
    status: int
    code: str
    message: str
    retry_after: float | None = None
    request_id: str | None = None

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.request_id:
            error["request_id"] = self.request_id
        return {"error": error}

    def headers(self) -> dict[str, str]:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


def masked(text: str) -> str:
    """`text` with URLs, IP addresses and absolute paths replaced (safe to show a client)."""
    return _INTERNAL.sub("<internal>", text)


def problem_for(exc: BaseException, request_id: str | None = None, *, local: bool = False) -> Problem:
    """Map any exception to what a client sees; 5xx details go to the log under `request_id`.
    `local`: the one who reads it runs this process (the stdio MCP proxy), so our own errors
    keep their words, the addresses they name included (e.g. the gateway it cannot reach)."""
    cause = _cause(exc)
    for cls, status in STATUS_TABLE:
        if isinstance(cause, cls):
            message = _first_line(cause) if local else _public_message(cause, status)
            if status >= 500:  # a memory busy or restarting is a state, retried; a storage outage a fault
                (logger.warning if isinstance(cause, E.Unavailable) else logger.error)(
                    "request %s: %s: %s", request_id, type(cause).__name__, _first_line(cause))
            return Problem(status, snake(_our_class(cause).__name__), message,
                           _retry_after(cause, status), request_id)
    if _ray_unavailable(exc):
        logger.warning("request %s: backend unavailable: %r", request_id, exc)
        return Problem(503, "unavailable", "the memory backend is busy or restarting; retry shortly",
                       RETRY_AFTER_S, request_id)
    logger.error("request %s: unexpected error", request_id, exc_info=exc)
    return Problem(500, "internal", "internal error; the server log has the details under this "
                   "request id", None, request_id)


def _cause(exc: BaseException) -> BaseException:
    # A RayTaskError subclass wraps the remote error: judge (and word) by the error itself.
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, E.NeuralMemoryError) else exc


def _public_message(exc: BaseException, status: int) -> str:
    if status >= 500:
        for cls, words in PUBLIC_MESSAGES:
            if isinstance(exc, cls):
                return words
    return masked(_first_line(exc))


def _retry_after(exc: BaseException, status: int) -> float | None:
    if status == 429:
        wait = getattr(exc, "retry_after", 1.0)
        return None if wait is None else float(wait)
    return RETRY_AFTER_S if status == 503 else None


def _our_class(exc: BaseException) -> type[BaseException]:
    """The first class of ours in the MRO (Ray wraps remote errors in dynamic subclasses)."""
    for cls in type(exc).__mro__:
        if _ERROR_CLASSES.get(cls.__name__) is cls:
            return cls
    return E.NeuralMemoryError


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def error_from_body(status: int, body: object) -> E.NeuralMemoryError:
    """Rebuild our exception from an HTTP error envelope (used by the stdio MCP proxy)."""
    code, message = "", f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", ""))
        message = str(body["error"].get("message", message))
    cls = next(
        (c for name, c in _ERROR_CLASSES.items() if snake(name) == code), None
    ) or _class_for_status(status)
    return cls(message)


def _class_for_status(status: int) -> type[E.NeuralMemoryError]:
    by_status = {400: E.InvalidInput, 401: E.AuthError, 403: E.Forbidden, 404: E.NotFound,
                 409: E.AlreadyExists, 413: E.PayloadTooLarge, 422: E.InvalidInput,
                 429: E.LimitExceeded}
    if status in by_status:
        return by_status[status]
    return E.Unavailable if status in (502, 503, 504) else E.NeuralMemoryError
