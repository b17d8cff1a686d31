"""`Client` and `AsyncClient`: the REST API of a Neural Memory server, typed and retried.

Both have the same methods (see `neural_memory._calls.Api`); the async ones are awaited.
Errors come back as the server raised them: the `{"error": {"code", "message"}}` envelope is
turned into the same exception class (MemoryNotFound, CheckpointConflict, ...) by
`serve.error_map.error_from_body`; a server that cannot be reached is `Unavailable`.

Retries: a call is sent again (after 0.2 s, 0.4 s, ... up to `retries` times) when the server
answers 502/503/504 or the connection fails. A call that changes state is resent after a
connection failure only when the request surely never left (connect errors), and after a
502/504 not at all (a proxy's answer: the server may have done it), unless the server
deduplicates it (observe with its request id, see `_calls.IDEMPOTENCY_HEADER`); such an
outcome is Unavailable, saying that the call may have been done.
A call the server's rate limit refused (429 rate_limited: nothing of it was done) waits its
Retry-After and is sent again, for up to `rate_limit_wait` seconds in all, then RateLimited.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import Any

import httpx

from errors import AuthError, InvalidInput, Unavailable
from neural_memory import image
from neural_memory._calls import Api, Call
from serve import schemas as S
from serve.error_map import error_from_body

__all__ = ["Client", "AsyncClient", "DEFAULT_URL", "URL_ENV", "API_KEY_ENV"]

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "NMEM_URL"
API_KEY_ENV = "NMEM_API_KEY"
RETRY_STATUSES = frozenset({502, 503, 504})
# A proxy in front of the server answers these when the server was slow or its answer was lost:
# the request may have been done (a 503 of the server itself is told before anything is done).
UNKNOWN_OUTCOME_STATUSES = frozenset({502, 504})
RATE_LIMITED = 429  # code rate_limited: refused before anything was done (not quota_exceeded)
MAX_RETRY_AFTER_S = 30.0
DEFAULT_RATE_LIMIT_WAIT_S = 60.0
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
DEFAULT_TIMEOUT_S = 60.0  # a first call may start a memory's actor and warm the encoder


def _server_url(url: str) -> str:
    """The server's base URL, checked: a typo would otherwise surface as a lost connection."""
    parsed = httpx.URL(url) if "://" in url else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"server URL {url!r} must look like http://HOST:PORT (e.g. {DEFAULT_URL})")
    route = parsed.path.rstrip("/").rpartition("/")[2]
    if route.lower() in ("v1", "mcp"):  # the client adds the routes itself
        raise InvalidInput(f"server URL {url!r} names the /{route} route: give the server's base URL, "
                           f"without /{route} (e.g. {DEFAULT_URL})")
    return url.rstrip("/")


def _number(name: str, value: Any, *, positive: bool) -> float:
    """A client option: a finite number, > 0 (`positive`) or >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        raise InvalidInput(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


class _Base(Api):
    def __init__(self, url: str | None, api_key: str | None, timeout: float, retries: int,
                 rate_limit_wait: float) -> None:
        self.url = _server_url(url or os.environ.get(URL_ENV) or DEFAULT_URL)
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        # None (no limit) and an httpx.Timeout pass as they are; a number must be a usable one
        self.timeout = timeout if timeout is None or isinstance(timeout, httpx.Timeout) else \
            _number("timeout (seconds)", timeout, positive=True)
        self._options: dict[str, Any] = {
            "base_url": self.url, "timeout": self.timeout,
            "headers": {"Authorization": f"Bearer {key}"} if key else {},
        }
        self._keyless = not key
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInput(f"retries must be an int >= 0, got {retries!r}")
        self.retries = retries
        self.rate_limit_wait = float(_number("rate_limit_wait (seconds)", rate_limit_wait, positive=False))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @staticmethod
    def _request(call: Call) -> dict[str, Any]:
        return {"method": call.method, "url": call.path, "json": call.json(), "params": call.params,
                "headers": call.headers or None, "content": call.content}

    def _again(self, call: Call, outcome: httpx.Response | httpx.TransportError, attempt: int,
               waited: float) -> tuple[float, int] | None:
        """(seconds to wait, attempts now counted) before sending `call` again, or None: the
        outcome (an answer, or a transport error) is final. Rate-limit waits count no attempt."""
        if isinstance(outcome, httpx.TransportError):
            sendable = call.idempotent or isinstance(outcome, NEVER_SENT)
            return (self._pause(attempt), attempt + 1) if attempt < self.retries and sendable else None
        if outcome.status_code == RATE_LIMITED and _error_code(outcome) == "rate_limited":
            try:
                wait = min(MAX_RETRY_AFTER_S, max(0.1, float(outcome.headers.get("retry-after", 1))))
            except ValueError:
                wait = 1.0
            return (wait, attempt) if waited + wait <= self.rate_limit_wait else None
        if _outcome_unknown(call, outcome):
            return None
        if attempt < self.retries and outcome.status_code in RETRY_STATUSES:
            return self._pause(attempt), attempt + 1
        return None

    def _outcome(self, call: Call, outcome: httpx.Response | httpx.TransportError) -> Any:
        if isinstance(outcome, httpx.TransportError):
            raise self._unreachable(outcome, call) from outcome
        if _outcome_unknown(call, outcome):
            raise Unavailable(f"{call.method} {call.path}: HTTP {outcome.status_code} from a proxy in front of the "
                              f"server at {self.url}, so this call may or may not have been done; it was not "
                              "sent again (that could do it twice): check (e.g. list or get it) before retrying")
        return self._finish(call, outcome)

    @staticmethod
    def _pause(attempt: int) -> float:
        return min(2.0, 0.2 * 2**attempt)

    def _unreachable(self, exc: httpx.TransportError, call: Call) -> Unavailable:
        # A request that left may have been done; one the server deduplicates was resent already.
        maybe_done = "" if isinstance(exc, NEVER_SENT) or call.idempotent else \
            f"; this {call.method} {call.path} may or may not have been done: check before retrying"
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, NEVER_SENT):
            limit = f"{self.timeout:g} s" if isinstance(self.timeout, (int, float)) else repr(self.timeout)
            return Unavailable(f"no answer from the gateway at {self.url} within the client's timeout of "
                               f"{limit} ({type(exc).__name__}); give the client a longer timeout{maybe_done}")
        what = "cannot reach" if isinstance(exc, NEVER_SENT) else "lost the connection to"
        return Unavailable(f"{what} the gateway at {self.url}: {type(exc).__name__} {exc}".strip() + maybe_done)

    def _check_open(self, closed: bool) -> None:
        if closed:
            raise InvalidInput(f"this {type(self).__name__} was closed; make a new one (or use it inside "
                               "its `with` block)")

    def _finish(self, call: Call, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            error = error_from_body(response.status_code, body)
            if isinstance(error, AuthError) and self._keyless:  # the server's words are about headers
                error = AuthError(f"{error} (none was given: set {API_KEY_ENV}, or pass api_key=... to the "
                                  "Python client, --api-key to a neural-memory command)")
            raise error
        return call.read(response) if call.read is not None else None

    @staticmethod
    def _image_bytes(source: str | Path | bytes) -> bytes:
        """The image to upload, checked here first so a bad file fails before any transfer."""
        if isinstance(source, (bytes, bytearray)):
            data, label = bytes(source), "the image"
        else:
            data, label = image.read_bytes(source), str(source)
        image.decode(data, source=label)
        return data


FINISHED = ("done", "failed")


def _error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _outcome_unknown(call: Call, response: httpx.Response) -> bool:
    """Whether a proxy's answer leaves it unknown if a write the server does not deduplicate
    was done (so it must not be sent again)."""
    return response.status_code in UNKNOWN_OUTCOME_STATUSES and not call.idempotent


def _job_id(job: S.ForgetJob | str) -> str:
    if isinstance(job, S.ForgetJob):
        return job.job_id
    if isinstance(job, str):
        return job
    raise InvalidInput(f"give the job forget() returned, or its job_id (a string), not {type(job).__name__} {job!r}")


def _timed_out(name: str, job_id: str, timeout: float) -> Unavailable:
    return Unavailable(f"forget job {job_id} on {name} is still running after {timeout:g}s; "
                       "call wait_for_forget again (it keeps running on the server)")


def _save_image(data: bytes, path: str | Path, source: str) -> image.ImageHeader:
    header = image.decode(data, source=source).header  # verify before it gets a file name
    image.write_file(path, [data])
    return header


class Client(_Base):
    """Synchronous client: `Client("http://127.0.0.1:8000", api_key=...)` (or NMEM_URL /
    NMEM_API_KEY). Use it as a context manager or call `close()`."""

    def __init__(self, url: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, retries: int = 2, *,
                 transport: httpx.BaseTransport | None = None,
                 rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT_S) -> None:
        super().__init__(url, api_key, timeout, retries, rate_limit_wait)
        self._http = httpx.Client(transport=transport, **self._options)

    def _send(self, call: Call) -> Any:
        self._check_open(self._http.is_closed)
        attempt, waited = 0, 0.0
        while True:
            try:
                outcome = self._http.request(**self._request(call))
            except httpx.TransportError as exc:
                outcome = exc
            again = self._again(call, outcome, attempt, waited)
            if again is None:
                return self._outcome(call, outcome)
            wait, attempt = again
            time.sleep(wait)
            waited += wait

    def export(self, name: str, path: str | Path, tag: str | None = None) -> image.ImageHeader:
        """Download `name` (its checkpoint `tag`, or its live state) as an image file."""
        data = self._send(self._export_call(name, tag))
        return _save_image(data, path, f"the image of {name}")

    def import_image(self, source: str | Path | bytes, name: str) -> S.ImportImageResponse:
        """Create memory `name` from an image file (or its bytes)."""
        return self._send(self._import_call(name, self._image_bytes(source)))

    def wait_for_forget(self, name: str, job: S.ForgetJob | str, timeout: float = 600.0,
                        poll: float = 0.5) -> S.ForgetJob:
        """Poll a forget job until it is done or failed (Unavailable after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        status = self.forget_status(name, _job_id(job))
        while status.status not in FINISHED:
            if time.monotonic() > deadline:
                raise _timed_out(name, status.job_id, timeout)
            time.sleep(poll)
            status = self.forget_status(name, status.job_id)
        return status

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The same methods as `Client`, awaited; `async with AsyncClient(...) as c:`."""

    def __init__(self, url: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, retries: int = 2, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT_S) -> None:
        super().__init__(url, api_key, timeout, retries, rate_limit_wait)
        self._http = httpx.AsyncClient(transport=transport, **self._options)

    async def _send(self, call: Call) -> Any:
        self._check_open(self._http.is_closed)
        attempt, waited = 0, 0.0
        while True:
            try:
                outcome = await self._http.request(**self._request(call))
            except httpx.TransportError as exc:
                outcome = exc
            again = self._again(call, outcome, attempt, waited)
            if again is None:
                return self._outcome(call, outcome)
            wait, attempt = again
            await asyncio.sleep(wait)
            waited += wait

    async def export(self, name: str, path: str | Path, tag: str | None = None
                     ) -> image.ImageHeader:
        data = await self._send(self._export_call(name, tag))
        return await asyncio.to_thread(_save_image, data, path, f"the image of {name}")

    async def import_image(self, source: str | Path | bytes, name: str) -> S.ImportImageResponse:
        data = await asyncio.to_thread(self._image_bytes, source)
        return await self._send(self._import_call(name, data))

    async def wait_for_forget(self, name: str, job: S.ForgetJob | str, timeout: float = 600.0,
                              poll: float = 0.5) -> S.ForgetJob:
        deadline = time.monotonic() + timeout
        status = await self.forget_status(name, _job_id(job))
        while status.status not in FINISHED:
            if time.monotonic() > deadline:
                raise _timed_out(name, status.job_id, timeout)
            await asyncio.sleep(poll)
            status = await self.forget_status(name, status.job_id)
        return status

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
