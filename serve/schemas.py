"""Request and response models of the public contract (REST `/v1` and MCP tools).

Field names follow the product spec (SPEC §3.2). Every limit comes from `contract`, so a bad
request is refused here, with a message naming the field, by exactly the rule the layers below
apply, before anything reaches the encoder, a cluster or an actor.
Requests forbid unknown fields, so a typo ("contxt") is reported instead of ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

import contract as C

# Derived from `contract` (the one home of every input rule), anchored for pydantic.
MEMORY_NAME_PATTERN = C.anchored(C.MEMORY_NAME_PATTERN)
TAG_PATTERN = C.anchored(C.TAG_PATTERN)


def _has_content(text: str) -> str:
    C.check_new_text(text)  # InvalidInput is a ValueError: pydantic reports it on the field
    return text


def _no_nul(text: str) -> str:
    C.check_description(text)
    return text


Text = Annotated[str, Field(min_length=1, max_length=C.MAX_TEXT_CHARS), AfterValidator(_has_content)]


MemoryName = Annotated[str, Field(
    pattern=MEMORY_NAME_PATTERN, examples=["default", "project-x"],
    description="Memory name: 1-63 of a-z 0-9 . _ -, starting with a letter or digit.")]
Tag = Annotated[str, Field(
    pattern=TAG_PATTERN, examples=["stable-v1", "v1.0"],
    description="Checkpoint tag: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit.")]
Domain = Annotated[
    str,
    Field(
        min_length=1,
        max_length=C.MAX_DOMAIN_CHARS,
        pattern=C.anchored(C.DOMAIN_PATTERN),
        description=f"Domain tag for routing and stats, e.g. 'python' (1-{C.MAX_DOMAIN_CHARS} "
                    "characters, no control characters).",
    ),
]


def _visible_domain(domain: str) -> str:
    C.check_new_domain(domain)
    return domain


# A new write's domain (a forget names domains already stored, so it takes `Domain`).
NewDomain = Annotated[Domain, AfterValidator(_visible_domain)]
AFTER_REQUEST_ID = (
    "The `request_id` of an earlier write to this memory that must be applied before this one: "
    "this write waits for it (up to NMEM_ORDERED_WRITE_WAIT_SECONDS, default 30), so a client "
    "may keep several writes in flight and still have them applied in its order. If that write "
    "is not applied in time, this one is refused with 409 `out_of_order` and nothing of it is "
    "applied. Name a recent write: ids are remembered like idempotency keys (the memory's newest "
    "NMEM_REMEMBERED_REQUESTS writes, also across restarts).")
# The header a client may send a write's idempotency key in, instead of the body's `request_id`.
IDEMPOTENCY_HEADER = "Idempotency-Key"
RequestId = Annotated[str, Field(pattern=C.anchored(C.REQUEST_ID_PATTERN),
                                  examples=["import-3f2a9c-batch-0007"])]
LearningRate = Annotated[
    float,
    Field(gt=0, le=C.MAX_LEARNING_RATE, allow_inf_nan=False, strict=True,
          description=f"Override the memory's learning rate for this observation, in "
                      f"(0, {C.MAX_LEARNING_RATE:g}]."),
]
Temperature = Annotated[
    float,
    Field(ge=0, le=C.MAX_TEMPERATURE, allow_inf_nan=False, strict=True,
          description=f"Softmax temperature of the attention weights over the returned patterns, "
                      f"0 (greedy: all weight on the best) to {C.MAX_TEMPERATURE:g}; default "
                      f"{C.DEFAULT_TEMPERATURE}."),
]
MaxTokens = Annotated[
    int, Field(ge=1, le=C.MAX_TOKENS, strict=True, description="Upper bound on the response length in words.")
]
TopK = Annotated[int, Field(ge=C.MIN_TOP_K, le=C.MAX_TOP_K, strict=True,
                            description="How many patterns to use/return.")]
Description = Annotated[str, Field(max_length=C.MAX_DESCRIPTION_CHARS, description="Free-text note."),
                        AfterValidator(_no_nul)]
# Paging of memory listings (cursor = the last name of the previous page).
Cursor = Annotated[str, Field(pattern=MEMORY_NAME_PATTERN,
                              description="`next_cursor` of the previous page; omit for the first page.")]
PageLimit = Annotated[int, Field(ge=1, le=C.MAX_PAGE, description=f"Memories per page (1-{C.MAX_PAGE}).")]
NamePrefix = Annotated[str, Field(pattern=C.anchored(C.NAME_PREFIX_PATTERN),
                                  description="Only memories whose name starts with this.")]
NextCursor = Annotated[str | None, Field(description="Pass as `cursor` to get the next page; null on "
                                                     "the last page.")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- requests


class CreateMemoryRequest(Request):
    name: MemoryName
    config: dict[str, Any] | None = Field(
        None, description="MemoryConfig overrides, e.g. {\"encoder\": \"hash\"}; omit for defaults."
    )


class ObserveRequest(Request):
    context: Text | None = Field(None, description="Content to learn from; the memory's weights "
                                                   "update on it. Give this or `contexts`.")
    contexts: list[Text] | None = Field(
        None, min_length=1, max_length=C.MAX_BATCH_ITEMS,
        description=f"A batch of 1-{C.MAX_BATCH_ITEMS} texts learned in order as one write (one "
                    "log entry, chunked updates; the request body stays under the size limit). "
                    "Give this or `context`.")
    learning_rate: LearningRate | None = None
    domain: NewDomain | None = None
    request_id: RequestId | None = Field(
        None, description="Idempotency key (or the `Idempotency-Key` header): a retried write "
                          "with the same key is applied once and answered with the first result; the key "
                          "of another write (other texts, domain or learning rate) is refused with "
                          "409 `request_id_reused`.")
    after_request_id: RequestId | None = Field(
        None, description=AFTER_REQUEST_ID)

    @model_validator(mode="before")
    @classmethod
    def _one_of_context_or_contexts(cls, data: Any) -> Any:
        if isinstance(data, dict) and (data.get("context") is None) == (data.get("contexts") is None):
            unknown = sorted(set(data) - set(cls.model_fields))
            typo = f" (unknown field(s): {', '.join(map(str, unknown))})" if unknown else ""
            raise ValueError(f"give exactly one of `context` (one text) or `contexts` (a batch){typo}")
        return data

    @property
    def texts(self) -> list[str]:
        return [self.context] if self.context is not None else list(self.contexts)


class InferRequest(Request):
    prompt: Text = Field(description="What to infer about.")
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    top_k: TopK = 5


class SurpriseRequest(Request):
    input: Text = Field(description="Text whose novelty to measure.")


class ConsolidateRequest(Request):
    pass


class CheckpointRequest(Request):
    tag: Tag
    description: Description = ""


class RestoreRequest(Request):
    tag: Tag


class ForkRequest(Request):
    new_name: MemoryName = Field(description="Name of the new branch (a new memory).")
    source_tag: Tag | None = Field(
        None, description="Checkpoint to fork from; omit to fork the current state."
    )


class AttentionMapRequest(Request):
    query: Text = Field(description="Query whose attention over learned patterns to show.")


class StepRange(Request):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: int = Field(alias="from", ge=1, description="First step (as in observe's `step`), included.")
    to: int = Field(ge=1, description="Last step, included.")

    @model_validator(mode="after")
    def _ordered(self) -> "StepRange":
        if self.to < self.from_:
            raise ValueError("steps: `to` must not be before `from`")
        return self


FORGET_SELECTORS = ("text", "texts", "domain", "steps")


class ForgetRequest(Request):
    text: Text | None = Field(None, description="Forget every observation of this text: in the same words, case, spacing and "
                                             "closing punctuation aside.")
    texts: list[Text] | None = Field(
        None, min_length=1, max_length=C.MAX_BATCH_ITEMS,
        description="Forget every observation of any of these texts, e.g. the `pattern`s an infer or "
                    "attention_map returned.")
    domain: Domain | None = Field(None, description="Forget every observation made with this domain.")
    steps: StepRange | None = Field(
        None, description="Forget the observations observe answered with these steps (an earlier forget "
                          "does not renumber them).")
    mode: Literal["exact", "approximate"] = Field(
        "exact", description="exact: rebuild the memory as if they had never been observed, by replay "
                             "(needs the kept history; fails with history_unavailable otherwise). "
                             "approximate: erase their stored records and push the network away from "
                             "them (no history needed; reported as approximate).")
    dry_run: bool = Field(False, strict=True, description="Only list what would be forgotten; change nothing.")
    checkpoints: Literal["rebuild", "delete"] = Field(
        "rebuild", description="Your checkpoint tags whose state held a forgotten observation: rebuilt "
                               "without it (default), or deleted.")
    forks: bool = Field(False, strict=True,
                        description="Also forget it in the forks made from a state that held it; the "
                                    "job then reads running until every fork's run has finished.")

    @model_validator(mode="before")
    @classmethod
    def _one_selector(cls, data: Any) -> Any:
        # An empty one counts as given: its own check then says it is empty.
        if isinstance(data, dict) and sum(data.get(k) is not None for k in FORGET_SELECTORS) != 1:
            raise ValueError("give exactly one selector: `text`, `texts`, `domain` or `steps` ({from, to})")
        return data

    def selector(self) -> dict:
        """The selector as the actor takes it."""
        if self.steps is not None:
            return {"steps": {"from": self.steps.from_, "to": self.steps.to}}
        return {k: getattr(self, k) for k in ("text", "texts", "domain") if getattr(self, k) is not None}


# ---------------------------------------------------------------- responses


class CreateMemoryResponse(Response):
    name: str = Field(description="The new memory's name.")
    weight_hash: str = Field(description="sha256 of the initial weights.")
    weight_parameters: int = Field(description="Number of trainable parameters.")


PARENT_DELETED = ("The memory it was forked from was deleted since; a memory now registered under "
                  "that name is another one, not its parent.")
BEING_CREATED = ("A create, fork or image import of it is still running: calls to it answer 503 busy "
                 "until it is done (seconds), and if it fails the name is freed.")


class MemorySummary(Response):
    name: str
    total_observations: int
    live: bool = Field(description="Whether an actor currently holds it in memory.")
    being_created: bool = Field(False, description=BEING_CREATED)
    parent: str | None = Field(None, description="Memory it was forked from, if any.")
    parent_deleted: bool = Field(False, description=PARENT_DELETED)


class MemoryList(Response):
    memories: list[MemorySummary] = Field(description="One page of your memories, by name.")
    next_cursor: NextCursor = None


class ObservedItem(Response):
    surprise: float = Field(description="How novel this text was before learning it, 0-1.")
    step: int = Field(description="The memory's step after this text.")


class ObserveResponse(Response):
    surprise: float = Field(description="How novel the context was, 0 (known) to 1 (new); for a "
                                        "batch, the mean over its items.")
    weight_delta: float = Field(description="Magnitude of the weight change (of the whole batch).")
    patterns_activated: list[str] = Field(description="Learned patterns that fired.")
    step: int = Field(description="Observations applied to this memory so far.")
    weight_hash: str = Field(description="sha256 of the weights after this update.")
    items: list[ObservedItem] | None = Field(
        None, description="For a batch (`contexts`): one result per text, in order.")
    repeated: bool = Field(False, description="True when this request_id was applied before: this is "
                                              "that write's answer, and nothing was learned this time.")


class ParsedItem(Response):
    text: str
    domain: str | None = None


class ParsedFile(Response):
    items: list[ParsedItem] = Field(description="The texts an import of this file would learn, in order.")
    count: int


class PatternWeight(Response):
    pattern: str
    weight: float
    step: int | None = Field(None, description=(
        "When the memory first stored this text: its count of observations then (observe's `step`, "
        "until a forget renumbers the later ones as a twin would count them; the history keeps "
        "what observe answered as `answered_step`). Of two stored texts that disagree, the larger "
        "step was first told later; a text told again keeps its first step."))


class InferResponse(Response):
    response: str = Field(description="The stored text that best matches the prompt (ranked by "
                                      "similarity and the network's recall), with a close runner-up "
                                      "appended as 'related'. Recalled, not generated.")
    confidence: float = Field(description="1 - the prompt's surprise: how familiar the prompt is to this memory, "
                                          "0 (unknown) to 1 (well known); not whether it holds the answer (see how far "
                                          "the first attention weight stands above the rest).")
    attention_weights: list[PatternWeight] = Field(description="The top_k stored texts with softmax "
                                                               "attention weights.")


class SurpriseResponse(Response):
    score: float = Field(description="Surprise, 0 (already known) to 1 (novel).")
    nearest_pattern: str | None = Field(description="Most similar learned pattern (null: the memory holds none yet).")
    recommendation: Literal["learn", "skip", "consolidate"] = Field(
        description="\"skip\": this memory holds the text already, word for word (case, spacing and "
                    "closing punctuation aside); \"consolidate\": it is novel and the memory is nearly "
                    "full; else \"learn\" (a familiar-looking text may still carry a new value).")


class ConsolidateResponse(Response):
    patterns_merged: int
    memory_compressed_by: float = Field(description="Percentage the pattern book shrank.")
    stability_score: float


class CheckpointResponse(Response):
    checkpoint_id: str
    size_mb: float
    weight_hash: str = Field(description="For integrity verification.")


class CheckpointInfo(Response):
    tag: str
    created_at: str
    size_mb: float
    description: str = ""
    weight_hash: str | None = None
    step: int | None = None


class CheckpointList(Response):
    checkpoints: list[CheckpointInfo]


class RestoreResponse(Response):
    restored: bool
    weight_hash: str
    learning_since_checkpoint: int = Field(description="How far the memory's step was from the checkpoint's: "
                                                       "the observations the restore undid when the checkpoint is an "
                                                       "earlier state of the memory as it was; after an earlier "
                                                       "restore took it to another branch, only the difference in "
                                                       "steps.")


class ForkResponse(Response):
    forked: bool
    source_hash: str
    new_hash: str


class StatsResponse(Response):
    total_observations: int
    weight_parameters: int
    capacity_used: float = Field(description="How full the hot set of patterns is, 0-1 "
                                               "(at 1.0 a new pattern pushes the least recently seen out of "
                                               "`explain`; no record is forgotten).")
    avg_surprise: float = Field(description="Running average surprise of recent observations "
                                            "(exponential, weight surprise_ema per observation).")
    domains: list[str]
    weight_hash: str
    patterns: int | None = Field(None, description="Learned patterns held (capacity_used × slots).")
    episodes: int | None = Field(None, description=(
        "Distinct texts stored, verbatim, in the episodic store: what a memory's size grows with, "
        "never evicted (a text observed again is one record; total_observations counts it twice)."))
    size_mb: float | None = Field(
        None, description="Size of the newest auto-checkpoint, in MB: what the memory's saved state "
                          "weighed then. Writes since are in the log until the next one "
                          "(NMEM_CHECKPOINT_EVERY_WRITES), so an image of the live state may be larger."
    )


class AttentionMapResponse(Response):
    attention_weights: list[PatternWeight]
    visualization_url: str | None = None


class Pattern(Response):
    description: str = Field(description="Human-readable pattern.")
    strength: float = Field(description="How strongly learned.")
    examples: list[str] = Field(description="What triggered this pattern.")


class ExplainResponse(Response):
    patterns: list[Pattern]


class HistoryItem(Response):
    step: int = Field(description="Its step in the memory as it is now (a forget renumbers what follows "
                                  "the observations it removes).")
    answered_step: int | None = Field(None, description="Where a forget renumbered it: the step observe "
                                                        "answered, which a forget's `steps` selector names.")
    text: str
    surprise: float
    weight_hash: str
    at: str


class HistoryResponse(Response):
    observations: list[HistoryItem]


class LineageNode(Response):
    name: str
    parent: str | None = None
    parent_deleted: bool = Field(False, description=PARENT_DELETED)
    source_tag: str | None = None
    created_at: str | None = None
    live: bool = False
    being_created: bool = Field(False, description=BEING_CREATED)
    checkpoints: list[CheckpointInfo] = Field(default_factory=list, description=(
        "Its tagged checkpoints, oldest first (as GET /v1/memories/{name}/checkpoints lists them): "
        "the tree's middle level, between a memory and the forks made from each tag."))


class LineageResponse(Response):
    memories: list[LineageNode] = Field(description="One page of your memories, by name, with the "
                                                    "memory each was forked from.")
    next_cursor: NextCursor = None


class DeleteMemoryResponse(Response):
    deleted: bool
    name: str


class ImportImageResponse(Response):
    name: str = Field(description="The new memory, loaded from the image.")
    weight_hash: str = Field(description="Equal to the image's weight_hash (checked on import).")
    weight_parameters: int
    step: int = Field(description="Observations the imported state had learned.")
    source: str = Field(description="Where the image came from: memory[@tag] on its server.")


class ForkForgetting(Response):
    name: str = Field(description="The fork (a memory of yours).")
    source_tag: str | None = None
    contains: bool | None = Field(description="Whether the state it was forked from held a forgotten "
                                              "observation (null: unknown).")
    job_id: str | None = Field(None, description="The same forget on this fork (with `forks: true`).")
    status: str | None = None


class ForgetJob(Response):
    job_id: str = Field(description="Poll GET /v1/memories/{name}/forget/{job_id}.")
    memory: str
    status: Literal["pending", "running", "done", "failed"]
    mode: Literal["exact", "approximate"]
    dry_run: bool
    exact: bool | None = Field(description="true: the memory is now what it would be had the forgotten "
                                           "observations never happened (proven by replay); false: "
                                           "approximate; null: not known yet.")
    forgotten: int = Field(description="Observations forgotten (a dry run: that would be; approximate: "
                                       "records erased).")
    weight_hash: str | None = Field(description="The memory's weight hash after the job.")
    progress: float = Field(description="0-1.")
    selection: dict[str, Any] = Field(description="What was selected: its kind and size, never the text.")
    created_at: str
    finished_at: str | None = None
    error: dict[str, Any] | None = Field(None, description="{code, message} of a failed job; code "
                                                           "history_unavailable: use mode approximate.")
    report: dict[str, Any] | None = Field(
        None, description="The erasure report: replayed from where, checkpoints rebuilt or deleted, log "
                          "segments rewritten, objects deleted, forks (a dry run: the observations it "
                          "would forget, with their texts).")


class AuditRecord(Response):
    at: str
    tenant: str
    key: str | None = Field(description="Which API key (a fingerprint, never the key).")
    memory: str
    job_id: str
    selection: dict[str, Any]
    mode: str
    dry_run: bool
    exact: bool | None
    forgotten: int
    status: str
    error: str | None = None


class AuditResponse(Response):
    records: list[AuditRecord] = Field(description="Newest last; never a forgotten text.")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. memory_not_found.")
    message: str = Field(description="What went wrong and what to do about it.")
    details: list[dict[str, Any]] | None = Field(None, description="Per-field problems.")
    request_id: str | None = Field(
        None, description="Id of this request (also the X-Request-Id header): the server log "
                          "holds the details of a 5xx under it.")


class ErrorResponse(BaseModel):
    error: ErrorBody
