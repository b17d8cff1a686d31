"""Our exception tree -> HTTP status + `{"error": {"code", "message"}}`, and back.

Only serve/ turns errors into statuses. The table is ordered most specific first and matched
with isinstance, because the tree has diamonds (CheckpointNotFound is both a StorageError and
a NotFound: it must be a 404, not a 503). `code` is the class name in snake_case, so clients
can tell memory_not_found from checkpoint_not_found. Anything outside the tree is a 500 with a
generic message (the details go to the log, not to the caller). The reverse direction lets the
stdio MCP proxy raise the same exceptions the in-process tools would.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import errors as E

logger = logging.getLogger(__name__)

# (class, HTTP status), most specific first.
STATUS_TABLE: list[tuple[type[BaseException], int]] = [
    (E.CheckpointNotFound, 404),
    (E.CheckpointConflict, 409),
    (E.CheckpointCorrupt, 500),
    (E.InvalidInput, 400),
    (E.NotFound, 404),
    (E.AlreadyExists, 409),
    (E.IncompatibleState, 422),
    (E.AuthError, 401),
    (E.Forbidden, 403),
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
        }
    )


@dataclass(frozen=True)
class Problem:
    status: int
    code: str
    message: str

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def problem_for(exc: BaseException) -> Problem:
    """Map any exception to what a client sees."""
    for cls, status in STATUS_TABLE:
        if isinstance(exc, cls):
            code = _our_class(exc)
            return Problem(status, snake(code.__name__), _message(exc))
    if _ray_unavailable(exc):
        logger.warning("backend unavailable: %r", exc)
        return Problem(503, "unavailable", "the memory backend is busy or restarting; retry shortly")
    logger.error("unexpected error", exc_info=exc)
    return Problem(500, "internal", "internal error; the server log has the details")


def _our_class(exc: BaseException) -> type[BaseException]:
    """The first class of ours in the MRO (Ray wraps remote errors in dynamic subclasses)."""
    for cls in type(exc).__mro__:
        if _ERROR_CLASSES.get(cls.__name__) is cls:
            return cls
    return E.NeuralMemoryError


def _message(exc: BaseException) -> str:
    # A RayTaskError subclass renders the remote traceback; the caller wants the first line.
    cause = getattr(exc, "cause", None)
    if isinstance(cause, E.NeuralMemoryError):
        exc = cause
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
                 409: E.AlreadyExists, 413: E.InvalidInput, 422: E.InvalidInput}
    if status in by_status:
        return by_status[status]
    return E.Unavailable if status in (502, 503, 504) else E.NeuralMemoryError
