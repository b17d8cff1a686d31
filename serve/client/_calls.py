"""The REST calls, described once for the sync and the async client.

Each public method builds a `Call` (HTTP method, path, request model, how to read the reply,
whether it may be retried) and hands it to `_send`, which the sync client runs directly and
the async client returns as a coroutine. Request and response models are the server's own
(`serve.schemas`), so a bad argument is refused here with the server's message, before any
request is sent.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

import contract as C
from errors import InvalidInput
from neural_memory import image
from serve import schemas as S

# Every logical observe carries a stable request id, reused by every retry of that write: as
# the contract's header always, and as the body field `request_id` when the server's
# ObserveRequest declares it (serve/schemas.py).
IDEMPOTENCY_HEADER = S.IDEMPOTENCY_HEADER
SERVER_DEDUPES_OBSERVE = "request_id" in S.ObserveRequest.model_fields


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # relative to the base URL, so a base URL with a path prefix works
    body: BaseModel | None = None
    params: dict[str, Any] | None = None
    read: Callable[[httpx.Response], Any] | None = None
    # Safe to send again after the request may have reached the server (reads, deduplicated
    # writes). Other calls are retried only when the request surely never left, or on a 503.
    idempotent: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None  # a raw body (an image upload) instead of `body`

    def json(self) -> dict | None:
        return None if self.body is None else self.body.model_dump(mode="json", exclude_none=True, by_alias=True)


def model(cls: type[BaseModel], **fields: Any) -> BaseModel:
    """Build a request model, turning pydantic's error into our InvalidInput."""
    try:
        return cls(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                             for e in exc.errors())
        raise InvalidInput(problems) from None


def reader(cls: type[BaseModel]) -> Callable[[httpx.Response], BaseModel]:
    return lambda response: cls.model_validate(response.json())


def page_params(cursor: str | None, limit: int | None, prefix: str | None) -> dict[str, Any]:
    """Query parameters of a listing page, checked by the server's own rules first."""
    C.check_page(cursor, C.DEFAULT_PAGE if limit is None else limit, prefix)
    found = {"cursor": cursor, "limit": limit, "prefix": prefix or None}
    return {key: value for key, value in found.items() if value is not None}


def memory_path(name: str, action: str = "") -> str:
    if not isinstance(name, str) or not re.fullmatch(S.MEMORY_NAME_PATTERN, name):
        raise InvalidInput(f"memory name {name!r} is not valid: use 1-63 of a-z 0-9 . _ -, "
                           "starting with a letter or digit")
    return f"v1/memories/{name}" + (f"/{action}" if action else "")


class Api:
    """The client's methods; `_send` runs a Call (sync) or returns its coroutine (async)."""

    def _send(self, call: Call) -> Any:
        raise NotImplementedError

    # ---- registry ----------------------------------------------------------------------

    def create_memory(self, name: str, config: dict | None = None) -> S.CreateMemoryResponse:
        body = model(S.CreateMemoryRequest, name=name, config=config)
        return self._send(Call("POST", "v1/memories", body, read=reader(S.CreateMemoryResponse),
                               idempotent=False))

    def list_memories(self, cursor: str | None = None, limit: int | None = None,
                      prefix: str | None = None) -> S.MemoryList:
        """One page of your memories by name; pass `next_cursor` back as `cursor` for the next."""
        return self._send(Call("GET", "v1/memories", params=page_params(cursor, limit, prefix),
                               read=reader(S.MemoryList)))

    def delete_memory(self, name: str) -> S.DeleteMemoryResponse:
        done = S.DeleteMemoryResponse(deleted=True, name=name)
        return self._send(Call("DELETE", memory_path(name), read=lambda _: done, idempotent=False))

    def lineage(self, cursor: str | None = None, limit: int | None = None,
                prefix: str | None = None) -> S.LineageResponse:
        return self._send(Call("GET", "v1/lineage", params=page_params(cursor, limit, prefix),
                               read=reader(S.LineageResponse)))

    # ---- learning ----------------------------------------------------------------------

    def observe(self, name: str, text: str | list[str], domain: str | None = None,
                learning_rate: float | None = None, request_id: str | None = None,
                after_request_id: str | None = None) -> S.ObserveResponse:
        """Learn from `text`, or from a list of texts as one batch (one result per text in
        `items`). `request_id` (default: a fresh one) is reused by every retry, so a retried
        write is applied once. `after_request_id`: an earlier write's request id that must be
        applied first (for several writes in flight; OutOfOrder if it never is)."""
        request_id = request_id or uuid.uuid4().hex
        extra = {"request_id": request_id} if SERVER_DEDUPES_OBSERVE else {}
        if not isinstance(text, (str, list, tuple)):  # bytes would read as a list of numbers
            raise InvalidInput(f"text must be a string or a list of strings, got {type(text).__name__}")
        texts = {"context": text} if isinstance(text, str) else {"contexts": list(text)}
        body = model(S.ObserveRequest, domain=domain, learning_rate=learning_rate,
                     after_request_id=after_request_id, **texts, **extra)
        return self._send(Call("POST", memory_path(name, "observe"), body,
                               read=reader(S.ObserveResponse), idempotent=SERVER_DEDUPES_OBSERVE,
                               headers={IDEMPOTENCY_HEADER: request_id}))

    def infer(self, name: str, prompt: str, temperature: float | None = None,
              max_tokens: int | None = None, top_k: int = 5) -> S.InferResponse:
        body = model(S.InferRequest, prompt=prompt, temperature=temperature,
                     max_tokens=max_tokens, top_k=top_k)
        return self._send(Call("POST", memory_path(name, "infer"), body, read=reader(S.InferResponse)))

    def surprise(self, name: str, text: str) -> S.SurpriseResponse:
        body = model(S.SurpriseRequest, input=text)
        return self._send(Call("POST", memory_path(name, "surprise"), body,
                               read=reader(S.SurpriseResponse)))

    def consolidate(self, name: str) -> S.ConsolidateResponse:
        return self._send(Call("POST", memory_path(name, "consolidate"), S.ConsolidateRequest(),
                               read=reader(S.ConsolidateResponse), idempotent=False))

    # ---- state -------------------------------------------------------------------------

    def checkpoint(self, name: str, tag: str, description: str = "") -> S.CheckpointResponse:
        body = model(S.CheckpointRequest, tag=tag, description=description)
        return self._send(Call("POST", memory_path(name, "checkpoints"), body,
                               read=reader(S.CheckpointResponse), idempotent=False))

    def list_checkpoints(self, name: str) -> S.CheckpointList:
        return self._send(Call("GET", memory_path(name, "checkpoints"), read=reader(S.CheckpointList)))

    def restore(self, name: str, tag: str) -> S.RestoreResponse:
        body = model(S.RestoreRequest, tag=tag)
        return self._send(Call("POST", memory_path(name, "restore"), body,
                               read=reader(S.RestoreResponse), idempotent=False))

    def fork(self, name: str, new_name: str, source_tag: str | None = None) -> S.ForkResponse:
        body = model(S.ForkRequest, new_name=new_name, source_tag=source_tag)
        return self._send(Call("POST", memory_path(name, "fork"), body, read=reader(S.ForkResponse),
                               idempotent=False))

    # ---- introspection -----------------------------------------------------------------

    def stats(self, name: str) -> S.StatsResponse:
        return self._send(Call("GET", memory_path(name, "stats"), read=reader(S.StatsResponse)))

    def attention_map(self, name: str, query: str) -> S.AttentionMapResponse:
        body = model(S.AttentionMapRequest, query=query)
        return self._send(Call("POST", memory_path(name, "attention_map"), body,
                               read=reader(S.AttentionMapResponse)))

    def explain(self, name: str, top_k: int = 5) -> S.ExplainResponse:
        return self._send(Call("GET", memory_path(name, "explain"), params={"top_k": top_k},
                               read=reader(S.ExplainResponse)))

    def history(self, name: str, limit: int = 200) -> S.HistoryResponse:
        return self._send(Call("GET", memory_path(name, "history"), params={"limit": limit},
                               read=reader(S.HistoryResponse)))

    # ---- forgetting (waiting for a job is in the sync/async classes) --------------------

    def forget(self, name: str, text: str | None = None, texts: list[str] | None = None,
               domain: str | None = None, steps: dict | tuple | None = None, mode: str = "exact",
               dry_run: bool = False, checkpoints: str = "rebuild", forks: bool = False) -> S.ForgetJob:
        """Start forgetting: exactly one of `text`, `texts` (e.g. the patterns infer returned),
        `domain` or `steps` ({"from": a, "to": b} or (a, b)). Returns the job; wait for it with
        `wait_for_forget` (or poll `forget_status`)."""
        if isinstance(steps, (tuple, list)):
            if len(steps) != 2:
                raise InvalidInput(f"steps must be (from, to) or {{'from': a, 'to': b}}, got {steps!r}")
            steps = {"from": steps[0], "to": steps[1]}
        body = model(S.ForgetRequest, text=text, texts=texts, domain=domain, steps=steps, mode=mode,
                     dry_run=dry_run, checkpoints=checkpoints, forks=forks)
        # A key per call: a start resent after a lost answer finds its job, never starts another.
        return self._send(Call("POST", memory_path(name, "forget"), body, read=reader(S.ForgetJob),
                               idempotent=True, headers={IDEMPOTENCY_HEADER: uuid.uuid4().hex}))

    def forget_status(self, name: str, job_id: str) -> S.ForgetJob:
        if not isinstance(job_id, str) or not re.fullmatch(C.JOB_ID_PATTERN, job_id):
            raise InvalidInput(f"job_id {job_id!r} is not a forget job id (32 hex digits)")
        return self._send(Call("GET", memory_path(name, f"forget/{job_id}"), read=reader(S.ForgetJob)))

    def audit(self, limit: int = 100) -> S.AuditResponse:
        """Your forget jobs, newest last: who, when, what kind of selection, how (never the text)."""
        return self._send(Call("GET", "v1/audit", params={"limit": limit}, read=reader(S.AuditResponse)))

    # ---- images (the transfer itself is in the sync/async classes) ---------------------

    @staticmethod
    def _export_call(name: str, tag: str | None) -> Call:
        if tag is not None:
            model(S.RestoreRequest, tag=tag)  # the same tag rules
        return Call("GET", memory_path(name, "image"), params={"tag": tag} if tag else None,
                    read=lambda response: response.content)

    @staticmethod
    def _import_call(name: str, data: bytes) -> Call:
        return Call("PUT", memory_path(name, "image"), read=reader(S.ImportImageResponse),
                    idempotent=False, headers={"Content-Type": image.MEDIA_TYPE}, content=data)
