"""REST routes under /v1: validate (pydantic), resolve the tenant, call the TenantService.

The OpenAPI page (/docs) is the contract users read; the dashboard adds /history and /lineage.
Handlers hold no logic: errors propagate to `serve.http_errors`, which renders the envelope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import contract as C
from errors import InvalidInput
from serve import schemas as S
from serve.auth import Authenticator
from serve.http_middleware import API_PREFIX
from serve.service import TenantService

NamePath = Annotated[
    str, Path(pattern=S.MEMORY_NAME_PATTERN, description="Memory name (scoped by your API key).")
]
ERRORS = {
    status: {"model": S.ErrorResponse, "description": text}
    for status, text in [
        (400, "Bad input (says what to fix)"),
        (401, "Missing or unknown API key"),
        (404, "No such memory or checkpoint"),
        (409, "A conflict, named by `error.code`: the memory name or checkpoint tag is taken "
              "(`memory_exists`, `already_exists`, `checkpoint_conflict`), a request_id already names "
              "another write (`request_id_reused`), or a write's predecessor was not applied "
              "(`out_of_order`)"),
        (413, "Request body too large"),
        (415, "A compressed body (Content-Encoding): send it uncompressed"),
        (422, "Request failed validation (field paths in details), or a stored checkpoint is unusable"),
        (429, "A rate limit or quota was reached (the message names it); a rate limit's Retry-After says when "
              "to retry, a quota has none (delete a memory first)"),
        (500, "Internal error (the server log has the details under the request id)"),
        (503, "A backing service is unavailable; retry after Retry-After seconds"),
    ]
}

_bearer = HTTPBearer(auto_error=False, description="API key from NMEM_API_KEYS")


async def request_tenant(
    request: Request, _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """`Authorization: Bearer <key>` -> tenant, by the app's Authenticator (401 otherwise)."""
    auth: Authenticator = request.app.state.auth
    auth.check_client(request.client.host if request.client else None)
    return auth.tenant_for(request.headers.get("authorization"))


async def _service(request: Request, tenant: Annotated[str, Depends(request_tenant)]) -> TenantService:
    key = request.app.state.auth.key_id(request.headers.get("authorization"))
    return request.app.state.core.for_tenant(tenant, key)


Svc = Annotated[TenantService, Depends(_service)]


def create_router() -> APIRouter:
    """All /v1 routes; auth and the service come from `request.app.state` (auth, core)."""
    router = APIRouter(prefix=API_PREFIX, responses=ERRORS)
    _registry_routes(router)
    _learning_routes(router)
    _state_routes(router)
    _introspection_routes(router)
    _forget_routes(router)
    return router


def _registry_routes(router: APIRouter) -> None:
    @router.post("/memories", status_code=201, response_model=S.CreateMemoryResponse,
                 tags=["memories"], summary="Create a memory")
    async def create_memory(body: S.CreateMemoryRequest, s: Svc) -> dict:
        return await s.create_memory(body.name, body.config)

    @router.get("/memories", response_model=S.MemoryList, tags=["memories"],
                summary="List your memories, one page at a time")
    async def list_memories(
        s: Svc, cursor: Annotated[S.Cursor | None, Query()] = None,
        limit: Annotated[S.PageLimit, Query()] = C.DEFAULT_PAGE,
        prefix: Annotated[S.NamePrefix | None, Query()] = None,
    ) -> dict:
        return await s.list_memories(cursor, limit, prefix)

    @router.delete("/memories/{name}", status_code=204, response_class=Response,
                   tags=["memories"], summary="Delete a memory, its checkpoints and history")
    async def delete_memory(name: NamePath, s: Svc) -> Response:
        await s.delete_memory(name)
        return Response(status_code=204)

    @router.get("/lineage", response_model=S.LineageResponse, tags=["memories"],
                summary="Fork edges of your memories, one page at a time (for the dashboard)")
    async def lineage(
        s: Svc, cursor: Annotated[S.Cursor | None, Query()] = None,
        limit: Annotated[S.PageLimit, Query()] = C.DEFAULT_PAGE,
        prefix: Annotated[S.NamePrefix | None, Query()] = None,
    ) -> dict:
        return await s.lineage(cursor, limit, prefix)


def _learning_routes(router: APIRouter) -> None:
    @router.post("/memories/{name}/observe", response_model=S.ObserveResponse,
                 tags=["learning"], summary="Learn from a context (weights update; the text is kept as an episode)")
    async def observe(
        name: NamePath, body: S.ObserveRequest, s: Svc,
        idempotency_key: Annotated[S.RequestId | None, Header(
            alias=S.IDEMPOTENCY_HEADER, description="Same as the body's `request_id`.")] = None,
    ) -> dict:
        if body.request_id and idempotency_key and body.request_id != idempotency_key:
            raise InvalidInput(f"request_id {body.request_id!r} and the {S.IDEMPOTENCY_HEADER} header "
                               f"{idempotency_key!r} differ; send one, or the same in both")
        return await s.observe(name, body.texts if body.contexts else body.context, body.learning_rate,
                               body.domain, request_id=body.request_id or idempotency_key,
                               after_request_id=body.after_request_id)

    @router.post("/memories/{name}/infer", response_model=S.InferResponse, tags=["learning"],
                 summary="Recall: the stored text that best matches the prompt, with confidence")
    async def infer(name: NamePath, body: S.InferRequest, s: Svc) -> dict:
        return await s.infer(name, body.prompt, body.temperature, body.max_tokens, body.top_k)

    @router.post("/memories/{name}/surprise", response_model=S.SurpriseResponse,
                 tags=["learning"], summary="How novel is this input?")
    async def surprise(name: NamePath, body: S.SurpriseRequest, s: Svc) -> dict:
        return await s.surprise(name, body.input)

    @router.post("/memories/{name}/consolidate", response_model=S.ConsolidateResponse,
                 tags=["learning"], summary="Consolidate recent learning (like sleep)")
    async def consolidate(
        name: NamePath, s: Svc,
        body: Annotated[S.ConsolidateRequest | None, Body()] = None,
    ) -> dict:
        return await s.consolidate(name)


def _state_routes(router: APIRouter) -> None:
    @router.post("/memories/{name}/checkpoints", response_model=S.CheckpointResponse,
                 tags=["state"], summary="Save the learned state under a tag")
    async def checkpoint(name: NamePath, body: S.CheckpointRequest, s: Svc) -> dict:
        return await s.checkpoint(name, body.tag, body.description)

    @router.get("/memories/{name}/checkpoints", response_model=S.CheckpointList, tags=["state"],
                summary="List checkpoints, oldest first")
    async def list_checkpoints(name: NamePath, s: Svc) -> dict:
        return await s.list_checkpoints(name)

    @router.post("/memories/{name}/restore", response_model=S.RestoreResponse, tags=["state"],
                 summary="Roll back to a checkpoint")
    async def restore(name: NamePath, body: S.RestoreRequest, s: Svc) -> dict:
        return await s.restore(name, body.tag)

    @router.post("/memories/{name}/fork", response_model=S.ForkResponse, tags=["state"],
                 summary="Fork into a new memory (branch)")
    async def fork(name: NamePath, body: S.ForkRequest, s: Svc) -> dict:
        return await s.fork(name, body.new_name, body.source_tag)


def _introspection_routes(router: APIRouter) -> None:
    @router.get("/memories/{name}/stats", response_model=S.StatsResponse, tags=["introspection"],
                summary="Memory statistics")
    async def stats(name: NamePath, s: Svc) -> dict:
        return await s.stats(name)

    @router.post("/memories/{name}/attention_map", response_model=S.AttentionMapResponse,
                 tags=["introspection"], summary="Stored episodes the memory attends to for a query, with weights")
    async def attention_map(name: NamePath, body: S.AttentionMapRequest, s: Svc) -> dict:
        return await s.attention_map(name, body.query)

    @router.get("/memories/{name}/explain", response_model=S.ExplainResponse,
                tags=["introspection"], summary="Strongest patterns (reinforcement and network recall) with examples")
    async def explain(
        name: NamePath, s: Svc,
        top_k: Annotated[int, Query(ge=C.MIN_TOP_K, le=C.MAX_TOP_K)] = 5,
    ) -> dict:
        return await s.explain(name, top_k)

    @router.get("/memories/{name}/history", response_model=S.HistoryResponse,
                tags=["introspection"], summary="Recent observations as they happened, newest last (a restore leaves the ones it undid)")
    async def history(
        name: NamePath, s: Svc,
        limit: Annotated[int, Query(ge=1, le=C.MAX_HISTORY)] = 200,
    ) -> dict:
        return await s.history(name, limit)


JobIdPath = Annotated[str, Path(pattern=C.anchored(C.JOB_ID_PATTERN), description="The job id forget returned.")]


def _forget_routes(router: APIRouter) -> None:
    @router.post("/memories/{name}/forget", status_code=202, response_model=S.ForgetJob, tags=["forgetting"],
                 summary="Forget observations (exactly, by replay; or approximately): starts a job")
    async def forget(
        name: NamePath, body: S.ForgetRequest, s: Svc,
        idempotency_key: Annotated[S.RequestId | None, Header(
            alias=S.IDEMPOTENCY_HEADER, description="A retried start with the same key answers the job the "
                                                    "first one started instead of starting another.")] = None,
    ) -> dict:
        return await s.forget(name, mode=body.mode, dry_run=body.dry_run, checkpoints=body.checkpoints,
                              forks=body.forks, request_id=idempotency_key, **body.selector())

    @router.get("/memories/{name}/forget/{job_id}", response_model=S.ForgetJob, tags=["forgetting"],
                summary="Status and erasure report of a forget job")
    async def forget_status(name: NamePath, job_id: JobIdPath, s: Svc) -> dict:
        return await s.forget_status(name, job_id)

    @router.get("/audit", response_model=S.AuditResponse, tags=["forgetting"],
                summary="Your forget jobs: who (which key), when, what kind of selection, how (never the text)")
    async def audit(s: Svc, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict:
        return await s.audit(limit)
