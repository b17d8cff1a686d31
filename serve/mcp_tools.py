"""The 15 MCP tools, defined once for both MCP servers we run.

The gateway's `/mcp` endpoint and the stdio proxy (`neural-memory mcp`) register the same
functions; only the backend differs (a `TenantService` in the gateway, a REST client in the
proxy). A tool validates its arguments (the pydantic limits of `serve.schemas`), resolves
the memory name, dispatches, and turns our errors into MCP tool errors that say what to fix.
Docstrings and Field descriptions are what the model reading the tool list sees.
"""

import inspect
from typing import Annotated, Any, Awaitable, Callable, Literal, Protocol

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

import contract as C
from errors import Busy, MemoryExists, MemoryNotFound
from serve import schemas as S
from serve.error_map import problem_for
from serve.metrics import GatewayMetrics

TOOL_NAMES = (
    "observe", "infer", "surprise", "consolidate", "checkpoint", "restore", "fork",
    "list_checkpoints", "stats", "attention_map", "explain",
    "create_memory", "list_memories", "delete_memory", "forget",
)

OptionalMemory = Annotated[
    str | None,
    Field(
        pattern=S.MEMORY_NAME_PATTERN,
        description="Which memory to use (1-63 of a-z 0-9 . _ -). Omit for the default memory, "
        "which is created on first use.",
    ),
]
RequiredMemory = Annotated[str, Field(pattern=S.MEMORY_NAME_PATTERN, description="Memory name.")]


def _text(description: str) -> Any:
    return Annotated[S.Text, Field(description=f"{description} (1-{C.MAX_TEXT_CHARS} characters)")]


ContextArg = _text("Content to learn from; the memory's weights update on it")
PromptArg = _text("What to infer about")
InputArg = _text("Text whose novelty to measure")
QueryArg = _text("Query whose attention over learned patterns to show")

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


class MemoryBackend(Protocol):
    """What a tool needs: `serve.service.TenantService` (dicts) or `neural_memory.AsyncClient`
    (the same shapes as pydantic models; tools validate either with model_validate)."""

    async def create_memory(self, name: str, config: dict | None = None) -> dict: ...
    async def list_memories(self, cursor: str | None = None, limit: int = 100,
                            prefix: str | None = None) -> dict: ...
    async def delete_memory(self, name: str) -> dict: ...
    async def observe(self, name: str, context: str | list[str], learning_rate: float | None = None,
                      domain: str | None = None, request_id: str | None = None,
                      after_request_id: str | None = None) -> dict: ...
    async def infer(self, name: str, prompt: str, temperature: float | None = None,
                    max_tokens: int | None = None, top_k: int = 5) -> dict: ...
    async def surprise(self, name: str, input: str) -> dict: ...  # noqa: A002
    async def consolidate(self, name: str) -> dict: ...
    async def checkpoint(self, name: str, tag: str, description: str = "") -> dict: ...
    async def list_checkpoints(self, name: str) -> dict: ...
    async def restore(self, name: str, tag: str) -> dict: ...
    async def fork(self, name: str, new_name: str, source_tag: str | None = None) -> dict: ...
    async def stats(self, name: str) -> dict: ...
    async def attention_map(self, name: str, query: str) -> dict: ...
    async def explain(self, name: str, top_k: int = 5) -> dict: ...
    async def forget(self, name: str, text: str | None = None, texts: list[str] | None = None,
                     domain: str | None = None, steps: dict | None = None, mode: str = "exact",
                     dry_run: bool = False, checkpoints: str = "rebuild", forks: bool = False) -> dict: ...
    async def forget_status(self, name: str, job_id: str) -> dict: ...


BackendFactory = Callable[[Context], MemoryBackend]


class ContractMCPServer(MCPServer):
    """An MCPServer whose argument-validation failures carry our error code.

    The SDK checks tool arguments against their schemas (the limits of `contract`, via
    serve.schemas) before our code runs and reports a bare pydantic message; this prefixes the
    same `invalid_input` code that REST and the Python API give for the same value. Arguments
    a tool does not take are refused (the SDK's models would drop them, so a misspelt `memory`
    would write to the default memory); its input schema says so (additionalProperties)."""

    def add_tool(self, fn: Callable[..., Any], name: str | None = None, **options: Any) -> None:
        super().add_tool(fn, name=name, **options)
        self._tool_manager.get_tool(name or fn.__name__).parameters["additionalProperties"] = False

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        tool = self._tool_manager.get_tool(name)  # None: the SDK reports the unknown tool
        takes = list(tool.parameters.get("properties", {})) if tool is not None else []
        unknown = sorted(set(arguments or {}) - set(takes))
        if tool is not None and unknown:
            raise ToolError(f"Error executing tool {name}: invalid_input: unknown argument(s) "
                            f"{', '.join(map(repr, unknown))}; {name} takes {', '.join(takes)}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            raise ToolError(f"Error executing tool {name}: invalid_input: {_problems(cause)}") from cause


def _problems(exc: ValidationError) -> str:
    """pydantic's errors as `field: message; ...` (a whole-request rule has no field)."""
    def one(err: dict) -> str:
        message = err["msg"].removeprefix("Value error, ")
        return f"{'.'.join(str(p) for p in err['loc'])}: {message}" if err["loc"] else message
    return "; ".join(one(err) for err in exc.errors())


def _tool(server: MCPServer, annotations: ToolAnnotations) -> Callable[[Callable], Callable]:
    """Register with a tidy description: the docstring without its source indentation."""

    def register(fn: Callable) -> Callable:
        server.add_tool(fn, description=inspect.cleandoc(fn.__doc__ or ""), annotations=annotations)
        return fn

    return register
Op = Callable[[MemoryBackend, str], Awaitable[dict]]


def _request_id(ctx: Context) -> str | None:
    """The id the gateway gave this HTTP request (serve.http_middleware), if any."""
    try:
        return (ctx.headers or {}).get("x-request-id")
    except ValueError:  # no request context (called outside a request)
        return None


class _Dispatcher:
    """Runs one tool call: backend lookup, default-memory creation, error translation."""

    def __init__(self, backend_for: BackendFactory, default_memory: str,
                 metrics: GatewayMetrics | None, local_errors: bool) -> None:
        self.backend_for = backend_for
        self.default_memory = default_memory
        self.metrics = metrics
        self.local_errors = local_errors  # see error_map.problem_for(local=)

    async def run(self, tool: str, ctx: Context, memory: str | None, op: Op,
                  model: type[BaseModel], autocreate: bool = True) -> Any:
        name = memory or self.default_memory
        try:
            backend = self.backend_for(ctx)
            try:
                result = await op(backend, name)
            except (MemoryNotFound, Busy):  # Busy: perhaps a concurrent first call is creating it
                if not autocreate or name != self.default_memory:
                    raise
                await self._create_default(backend, name)  # there (or refused) once it returns
                result = await op(backend, name)
            out = model.model_validate(result)
        except Exception as exc:  # every failure becomes a tool error the model can act on
            self._count(tool, "error")
            problem = problem_for(exc, _request_id(ctx), local=self.local_errors)
            where = f" (request id {problem.request_id})" if problem.status >= 500 and problem.request_id else ""
            raise ToolError(f"{problem.code}: {problem.message}{where}") from exc
        self._count(tool, "ok")
        return out

    async def _create_default(self, backend: MemoryBackend, name: str) -> None:
        """Create the default memory on first use. Of concurrent first calls one creates it; a
        create meeting that creation waits for it to end (cluster.creating) and is told it exists."""
        try:
            await backend.create_memory(name)
        except MemoryExists:
            pass

    def _count(self, tool: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.tool_calls.labels(tool, outcome).inc()


def register_tools(server: MCPServer, backend_for: BackendFactory, default_memory: str = "default",
                   metrics: GatewayMetrics | None = None, *, local_errors: bool = False) -> None:
    """Add the 15 tools to `server`; `local_errors` for a server whose user runs it (the stdio
    proxy): its own errors are told unmasked."""
    d = _Dispatcher(backend_for, default_memory, metrics, local_errors)
    _register_learning(server, d)
    _register_state(server, d)
    _register_introspection(server, d)
    _register_registry(server, d)
    _register_forget(server, d)


def _register_learning(server: MCPServer, d: _Dispatcher) -> None:
    @_tool(server, WRITES)
    async def observe(
        ctx: Context,
        context: ContextArg | None = None,
        contexts: Annotated[list[S.Text] | None, Field(
            min_length=1, max_length=C.MAX_BATCH_ITEMS,
            description=f"Instead of `context`: 1-{C.MAX_BATCH_ITEMS} texts learned in order as "
                        "one write.")] = None,
        learning_rate: S.LearningRate | None = None,
        domain: S.NewDomain | None = None,
        request_id: Annotated[S.RequestId | None, Field(
            description="Idempotency key: a retried call with the same key is applied once; the key of "
                        "another write is refused (request_id_reused). Pass one (any new string per "
                        "write) whenever a call may be retried: a write sent again without it after "
                        "its answer was lost is learned twice.")] = None,
        after_request_id: Annotated[S.RequestId | None, Field(description=S.AFTER_REQUEST_ID)] = None,
        memory: OptionalMemory = None,
    ) -> S.ObserveResponse:
        """Teach the memory a text (`context`) or a batch of texts (`contexts`): its network's
        weights take a gradient step on them and each text is kept as an episode it can quote
        back later. Returns how surprising the text was before learning (0 known - 1 novel; a
        batch's mean, with one result per text in `items`), the size of the weight change, the
        stored patterns it resembled, the step count and the new weight hash."""
        if (context is None) == (contexts is None):
            raise ToolError("invalid_input: give exactly one of `context` (one text) or `contexts` "
                            "(a batch)")
        return await d.run("observe", ctx, memory, lambda b, m: b.observe(
            m, context if contexts is None else contexts, learning_rate=learning_rate,
            domain=domain, request_id=request_id, after_request_id=after_request_id), S.ObserveResponse)

    @_tool(server, READ_ONLY)
    async def infer(
        prompt: PromptArg,
        ctx: Context,
        temperature: S.Temperature | None = None,
        max_tokens: S.MaxTokens | None = None,
        top_k: S.TopK = 5,
        memory: OptionalMemory = None,
    ) -> S.InferResponse:
        """Recall what the memory knows about a prompt. The answer is a stored text, not newly
        generated text: stored episodes are ranked by 70 % similarity to the prompt and 30 % by
        how well each matches what the network recalls for the prompt; the best one is the
        response (with a close runner-up appended as "related"). Also returns a confidence
        (1 - the prompt's surprise) and the top_k episodes with softmax attention weights
        (temperature 0 puts all weight on the best), each with the step it was first stored at:
        the ranking does not prefer newer texts, so of two that disagree, the larger step was
        first told later (a text told again keeps its first step)."""
        return await d.run("infer", ctx, memory, lambda b, m: b.infer(
            m, prompt, temperature=temperature, max_tokens=max_tokens, top_k=top_k),
            S.InferResponse)

    @_tool(server, READ_ONLY)
    async def surprise(input: InputArg, ctx: Context, memory: OptionalMemory = None
                       ) -> S.SurpriseResponse:  # noqa: A002 - SPEC's argument name
        """Measure how novel an input is without learning it: the network's recall error times
        how far the input is from the closest stored text (0 already known - 1 novel). Returns
        that closest text and a recommendation: skip (the memory holds this text already, word
        for word), learn (a familiar-looking text may still carry a new value), or consolidate
        (novel while the hot set of patterns is over 90 % full)."""
        return await d.run("surprise", ctx, memory, lambda b, m: b.surprise(m, input),
                           S.SurpriseResponse)

    @_tool(server, WRITES)
    async def consolidate(ctx: Context, memory: OptionalMemory = None) -> S.ConsolidateResponse:
        """Run a consolidation pass (like sleep): replay recently seen stored episodes into the
        network's weights, anchor them against later drift (online EWC), and merge
        near-duplicate patterns. Returns how many patterns merged and a stability score."""
        return await d.run("consolidate", ctx, memory, lambda b, m: b.consolidate(m),
                           S.ConsolidateResponse)


def _register_state(server: MCPServer, d: _Dispatcher) -> None:
    @_tool(server, WRITES)
    async def checkpoint(
        tag: S.Tag,
        ctx: Context,
        description: S.Description = "",
        memory: OptionalMemory = None,
    ) -> S.CheckpointResponse:
        """Save the memory's current learned state under a tag (like `docker commit`).
        Tags are create-only: reusing one is an error."""
        return await d.run("checkpoint", ctx, memory, lambda b, m: b.checkpoint(
            m, tag, description=description), S.CheckpointResponse)

    @_tool(server, DESTRUCTIVE)
    async def restore(tag: S.Tag, ctx: Context, memory: OptionalMemory = None
                      ) -> S.RestoreResponse:
        """Roll the memory back to a checkpoint tag; learning since then is discarded."""
        return await d.run("restore", ctx, memory, lambda b, m: b.restore(m, tag),
                           S.RestoreResponse)

    @_tool(server, WRITES)
    async def fork(
        new_tag: Annotated[str, Field(pattern=S.MEMORY_NAME_PATTERN,
                                      description="Name of the new branch (a new memory).")],
        ctx: Context,
        source_tag: Annotated[S.Tag | None, Field(
            description="Checkpoint tag to fork from; omit to fork the current state.")] = None,
        memory: OptionalMemory = None,
    ) -> S.ForkResponse:
        """Fork the memory into a new branch named `new_tag`, from checkpoint `source_tag`
        (or the current state). The branch learns independently."""
        return await d.run("fork", ctx, memory, lambda b, m: b.fork(
            m, new_tag, source_tag=source_tag), S.ForkResponse)

    @_tool(server, READ_ONLY)
    async def list_checkpoints(ctx: Context, memory: OptionalMemory = None) -> S.CheckpointList:
        """List the memory's checkpoints, oldest first."""
        return await d.run("list_checkpoints", ctx, memory, lambda b, m: b.list_checkpoints(m),
                           S.CheckpointList)


def _register_introspection(server: MCPServer, d: _Dispatcher) -> None:
    @_tool(server, READ_ONLY)
    async def stats(ctx: Context, memory: OptionalMemory = None) -> S.StatsResponse:
        """Memory statistics: observations, network parameters, capacity used (0-1: how full the
        hot set of patterns is), running average surprise of recent observations, domains seen and
        the weight hash."""
        return await d.run("stats", ctx, memory, lambda b, m: b.stats(m), S.StatsResponse)

    @_tool(server, READ_ONLY)
    async def attention_map(query: QueryArg, ctx: Context, memory: OptionalMemory = None
                            ) -> S.AttentionMapResponse:
        """Show which stored episodes the memory attends to for a query: the same ranking as
        infer (70 % similarity, 30 % network recall), as texts with softmax weights."""
        return await d.run("attention_map", ctx, memory, lambda b, m: b.attention_map(m, query),
                           S.AttentionMapResponse)

    @_tool(server, READ_ONLY)
    async def explain(ctx: Context, top_k: S.TopK = 5, memory: OptionalMemory = None
                      ) -> S.ExplainResponse:
        """The memory's strongest patterns: stored episodes ranked half by how often they were
        reinforced and half by how well the network recalls them, each with its latest text
        (and domain) as the description and up to a few example texts."""
        return await d.run("explain", ctx, memory, lambda b, m: b.explain(m, top_k=top_k),
                           S.ExplainResponse)


def _register_registry(server: MCPServer, d: _Dispatcher) -> None:
    @_tool(server, WRITES)
    async def create_memory(
        memory: RequiredMemory,
        ctx: Context,
        config: Annotated[dict[str, Any] | None, Field(
            description='MemoryConfig overrides, e.g. {"encoder": "hash"}; omit for defaults.'
        )] = None,
    ) -> S.CreateMemoryResponse:
        """Create a new, empty memory (a small neural network that learns as you observe)."""
        return await d.run("create_memory", ctx, memory, lambda b, m: b.create_memory(m, config),
                           S.CreateMemoryResponse, autocreate=False)

    @_tool(server, READ_ONLY)
    async def list_memories(ctx: Context, cursor: S.Cursor | None = None,
                            limit: Annotated[S.PageLimit, Field(strict=True)] = C.DEFAULT_PAGE,
                            prefix: S.NamePrefix | None = None) -> S.MemoryList:
        """List your memories by name, one page at a time, with their observation counts and
        whether each is loaded; pass `next_cursor` back as `cursor` for the next page, and
        `prefix` to list only names starting with it."""
        return await d.run("list_memories", ctx, None, lambda b, m: b.list_memories(cursor, limit, prefix),
                           S.MemoryList, autocreate=False)

    @_tool(server, DESTRUCTIVE)
    async def delete_memory(memory: RequiredMemory, ctx: Context) -> S.DeleteMemoryResponse:
        """Delete a memory with its checkpoints and history. This cannot be undone."""
        return await d.run("delete_memory", ctx, memory, lambda b, m: b.delete_memory(m),
                           S.DeleteMemoryResponse, autocreate=False)


FORGET_POLL_SECONDS = 0.5
MAX_FORGET_WAIT = 120


async def _forget_until(backend: MemoryBackend, memory: str, job: Any, wait_seconds: float) -> Any:
    """The job once done or failed, or as it is after `wait_seconds`."""
    import asyncio  # noqa: PLC0415
    import time  # noqa: PLC0415

    deadline = time.monotonic() + wait_seconds
    while _field(job, "status") in ("pending", "running") and time.monotonic() < deadline:
        await asyncio.sleep(FORGET_POLL_SECONDS)
        job = await backend.forget_status(memory, _field(job, "job_id"))
    return job


def _field(value: Any, name: str) -> Any:
    return value[name] if isinstance(value, dict) else getattr(value, name)


def _register_forget(server: MCPServer, d: _Dispatcher) -> None:
    @_tool(server, DESTRUCTIVE)
    async def forget(
        ctx: Context,
        text: Annotated[S.Text | None, Field(description=(
            "Forget every observation of this text (in the same words: case, spacing and closing "
            "punctuation aside)."))] = None,
        texts: Annotated[list[S.Text] | None, Field(
            min_length=1, max_length=C.MAX_BATCH_ITEMS,
            description="Forget every observation of any of these texts (e.g. patterns infer returned).")] = None,
        domain: S.Domain | None = None,
        steps: Annotated[S.StepRange | None, Field(description="Forget the observations observe "
                                                               "answered with steps {from, to} (both included; an "
                                                               "earlier forget does not renumber them).")] = None,
        mode: Annotated[Literal["exact", "approximate"], Field(
            description="exact (replay without them; needs the kept history) or approximate.")] = "exact",
        dry_run: Annotated[bool, Field(strict=True, description="Only list what would be forgotten.")] = False,
        checkpoints: Annotated[Literal["rebuild", "delete"], Field(
            description="Tags that held them: rebuilt without them, or deleted.")] = "rebuild",
        forks: Annotated[bool, Field(strict=True,
                                     description="Also forget it in forks made from a state that held it; "
                                                 "the job reads running until every fork's run finished.")] = False,
        job_id: Annotated[str | None, Field(pattern=C.anchored(C.JOB_ID_PATTERN), description=(
            "Instead of a selector: read this job's status (a job still running after wait_seconds)."))] = None,
        wait_seconds: Annotated[float, Field(ge=0, le=MAX_FORGET_WAIT, strict=True, allow_inf_nan=False, description=(
            "How long to wait for the job to finish before returning its status."))] = 30,
        memory: OptionalMemory = None,
    ) -> S.ForgetJob:
        """Make the memory forget observations — on request, and provably: in exact mode it is
        rebuilt as if they had never been observed (every write is logged, so the memory
        replays its history, from the vectors it logged, without them: same weights as a twin
        that learned the same vectors without them), and
        every copy goes (checkpoints, logs, history). Select by `text` (the same words: case, spacing and closing punctuation aside), a list of `texts`
        (e.g. the patterns infer returned), a `domain` or a `steps` range; `dry_run` lists what
        would go. Returns the job (waiting up to wait_seconds): status, exact, forgotten count,
        new weight hash and the erasure report. If the history is gone it fails with
        history_unavailable: then use mode approximate."""
        if job_id is not None:
            given = [n for n, v in (("text", text), ("texts", texts), ("domain", domain), ("steps", steps)) if v]
            if given:  # a status read must not look like a started forget
                raise ToolError(f"invalid_input: job_id reads a job's status; it takes no selector "
                                f"(got {', '.join(given)}): send the selector without job_id to start a job")
        else:
            try:
                S.ForgetRequest(text=text, texts=texts, domain=domain,
                                steps=steps.model_dump(by_alias=True) if steps else None)
            except ValidationError as exc:
                raise ToolError(f"invalid_input: {_problems(exc)}") from None

        async def op(b: MemoryBackend, m: str) -> Any:
            if job_id is not None:
                job = await b.forget_status(m, job_id)
            else:
                job = await b.forget(m, text=text, texts=texts, domain=domain,
                                     steps={"from": steps.from_, "to": steps.to} if steps else None,
                                     mode=mode, dry_run=dry_run, checkpoints=checkpoints, forks=forks)
            return await _forget_until(b, m, job, wait_seconds)

        return await d.run("forget", ctx, memory, op, S.ForgetJob, autocreate=False)
