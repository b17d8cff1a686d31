"""Request limits, the error mapping and the app builder's checks (no Ray, no servers)."""

from __future__ import annotations

import logging
import math

import pytest
from pydantic import ValidationError

import contract as C
import errors as E
from serve import schemas as S
from serve.error_map import PUBLIC_MESSAGES, STATUS_TABLE, error_from_body, problem_for
from serve.http_middleware import validation_problem


@pytest.mark.parametrize(
    "model, body",
    [
        (S.ObserveRequest, {"context": ""}),
        (S.ObserveRequest, {"context": "   \n\t "}),
        (S.ObserveRequest, {"context": "x" * (C.MAX_TEXT_CHARS + 1)}),
        (S.ObserveRequest, {"context": "ok", "learning_rate": math.nan}),
        (S.ObserveRequest, {"context": "ok", "learning_rate": math.inf}),
        (S.ObserveRequest, {"context": "ok", "learning_rate": 0}),
        (S.ObserveRequest, {"context": "ok", "contxt": "typo"}),
        (S.InferRequest, {"prompt": "ok", "top_k": 0}),
        (S.InferRequest, {"prompt": "ok", "temperature": -1}),
        (S.InferRequest, {"prompt": "ok", "max_tokens": 0}),
        (S.CreateMemoryRequest, {"name": "../x"}),
        (S.CreateMemoryRequest, {"name": "a" * 300}),
        (S.CreateMemoryRequest, {"name": "Upper"}),
        (S.CheckpointRequest, {"tag": "../../etc"}),
        (S.CheckpointRequest, {"tag": "v1", "description": "d" * 2000}),
        (S.ForkRequest, {"new_name": "a/b"}),
    ],
)
def test_bad_requests_fail_validation(model, body):
    with pytest.raises(ValidationError):
        model.model_validate(body)


def test_nan_in_raw_json_is_refused():
    with pytest.raises(ValidationError, match="finite"):
        S.ObserveRequest.model_validate_json('{"context": "x", "learning_rate": NaN}')


def test_good_requests_pass():
    assert S.ObserveRequest(context="hi", learning_rate=0.1, domain="python").domain == "python"
    assert S.ForkRequest(new_name="feature-branch", source_tag="stable-v1").source_tag == "stable-v1"
    assert S.CheckpointRequest(tag="v1.0").description == ""


def _instance(cls: type) -> BaseException:
    return cls("boom")


@pytest.mark.parametrize("name", [n for n in E.__all__ if n != "NeuralMemoryError"])
def test_every_error_class_has_a_deliberate_status(name):
    cls = getattr(E, name)
    problem = problem_for(_instance(cls))
    assert 400 <= problem.status < 600
    # A storage failure is told in fixed words (its own names servers or paths); others as raised.
    fixed = next((words for c, words in PUBLIC_MESSAGES if isinstance(_instance(cls), c)), None)
    assert problem.message == (fixed if problem.status >= 500 and fixed else "boom")
    # Not just the catch-all: some row other than the base class matched.
    matched = next(c for c, _ in STATUS_TABLE if isinstance(_instance(cls), c))
    assert matched is not E.NeuralMemoryError


@pytest.mark.parametrize(
    "cls, status, code",
    [
        (E.InvalidInput, 400, "invalid_input"),
        (E.MemoryNotFound, 404, "memory_not_found"),
        (E.CheckpointNotFound, 404, "checkpoint_not_found"),  # a StorageError too: still 404
        (E.MemoryExists, 409, "memory_exists"),
        (E.CheckpointConflict, 409, "checkpoint_conflict"),
        (E.AuthError, 401, "auth_error"),
        (E.Forbidden, 403, "forbidden"),
        (E.Unavailable, 503, "unavailable"),
        (E.CheckpointCorrupt, 422, "checkpoint_corrupt"),
        (E.QuotaExceeded, 429, "quota_exceeded"),
        (E.RateLimited, 429, "rate_limited"),
    ],
)
def test_status_and_code(cls, status, code):
    problem = problem_for(cls("x"))
    assert (problem.status, problem.code) == (status, code)
    assert problem.body() == {"error": {"code": code, "message": "x"}}


def test_storage_failures_hide_addresses_and_carry_retry_after_and_the_request_id():
    problem = problem_for(E.MetadataError("Redis/Valkey at redis://127.0.0.1:6379/0 is unreachable"), "rid-1")
    assert (problem.status, problem.code) == (503, "metadata_error")
    assert "127.0.0.1" not in problem.message and "redis://" not in problem.message
    assert problem.body()["error"]["request_id"] == "rid-1"
    assert problem.headers()["Retry-After"] == "2"
    assert problem_for(E.RateLimited("slow down", retry_after=60)).headers()["Retry-After"] == "60"
    # A quota is lifted by a deletion, not by waiting: no Retry-After for a client to loop on.
    assert "Retry-After" not in problem_for(E.QuotaExceeded("quota: at most 3")).headers()


@pytest.mark.parametrize("text", [
    "checkpoint acme/x/v1-ab.ckpt in /var/lib/nmem/checkpoints is truncated",
    "S3 at http://minio:9000 failed on acme/x/v1",
    "node 10.1.2.3:6379 is gone",
])
def test_client_messages_never_hold_paths_or_addresses(text):
    message = problem_for(E.InvalidInput(text)).message
    assert "/var/lib" not in message and "minio:9000" not in message and "10.1.2.3" not in message
    assert "acme/x/v1" in message or "node" in message  # tenant-relative names stay


def test_foreign_errors_are_500_without_leaking_details():
    problem = problem_for(KeyError("secret internals"))
    assert problem.status == 500 and "secret" not in problem.message


@pytest.mark.parametrize(
    "cls", [E.MemoryNotFound, E.CheckpointNotFound, E.MemoryExists, E.InvalidInput, E.Unavailable]
)
def test_envelopes_round_trip_to_the_same_class(cls):
    problem = problem_for(cls("msg"))
    again = error_from_body(problem.status, problem.body())
    assert type(again) is cls and str(again) == "msg"


def test_validation_errors_name_the_field():
    try:
        S.ObserveRequest.model_validate({"context": "", "learning_rate": "NaN"})
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
    problem, details = validation_problem(errors)
    assert problem.status == 422
    assert {d["field"] for d in details} == {"context", "learning_rate"}
    assert "context:" in problem.message


def test_build_app_refuses_unknown_args_and_public_bind_without_keys(monkeypatch):
    monkeypatch.delenv("NMEM_API_KEYS", raising=False)
    monkeypatch.delenv("NMEM_API_KEYS_FILE", raising=False)
    from serve.app import build_app

    with pytest.raises(TypeError, match="unknown args"):
        build_app({"hots": "127.0.0.1"})
    with pytest.raises(E.InvalidInput, match="NMEM_API_KEYS"):
        build_app({"host": "0.0.0.0"})
    assert build_app({"host": "127.0.0.1"}) is not None
    assert build_app({"host": "0.0.0.0", "api_keys": "some-long-key:acme"}) is not None


@pytest.mark.parametrize("variable", ["NMEM_GC_GRACE_SECONDS", "NMEM_REDIS_TIMEOUT", "NMEM_S3_CONNECT_TIMEOUT",
                                      "NMEM_BODY_STALL_SECONDS", "NMEM_ORDERED_WRITE_WAIT_SECONDS"])
def test_an_infinite_number_is_refused_naming_the_setting(monkeypatch, variable):
    """inf was taken: a gc failing every round in a log, an OverflowError naming nothing, or S3
    reported down while it answered."""
    from serve.app import read_settings

    monkeypatch.setenv(variable, "inf")
    with pytest.raises(E.InvalidInput, match=f"{variable}: Input should be a finite number"):
        read_settings()


def test_operator_mistakes_in_settings_are_told(monkeypatch):
    """NMEM_DATA_DIR= meant the current directory (made 0700); a misspelt setting or the client's
    NMEM_API_KEY on a server were dropped without a word; an unknown preloaded encoder failed
    the deploy with only Serve's words; a malformed URL's error showed its password."""
    from serve.app import read_settings, setting_variables
    from serve.encoder import check_preload
    from serve.settings import unread_variable_warnings

    monkeypatch.setenv("NMEM_DATA_DIR", "")
    assert str(read_settings().cluster.storage.data_dir) == ".neural-memory"
    environ = {"NMEM_CHECKPOINT_EVERY_WRITE": "5", "NMEM_API_KEY": "k", "NMEM_URL": "http://x:1"}
    warnings = unread_variable_warnings(environ, setting_variables())
    assert any("did you mean NMEM_CHECKPOINT_EVERY_WRITES?" in w for w in warnings), warnings
    assert any(w.startswith("NMEM_API_KEY is the key a client sends") for w in warnings), warnings
    assert len(warnings) == 2  # NMEM_URL is the tools' own
    with pytest.raises(E.InvalidInput, match="NMEM_PRELOAD_ENCODERS: unknown encoder 'minlm'"):
        check_preload(["hash", "minlm"])
    for name, url in (("NMEM_REDIS_URL", "redis//:hunter2pw@host:6379/0"),
                      ("NMEM_S3_ENDPOINT", "ftp://user:hunter2pw@host:9000")):
        monkeypatch.setenv(name, url)
        with pytest.raises(E.InvalidInput) as refused:
            read_settings()
        assert name in str(refused.value) and "hunter2pw" not in str(refused.value), refused.value
        monkeypatch.delenv(name)


def test_the_gateways_loggers_write_where_serves_replica_logger_does():
    """In a replica they propagated to the root logger, which Ray leaves without a handler: a
    5xx's details, logged under its request id, were in no file at all."""
    import logging

    from serve.gateway import OUR_LOGGERS, _log_where_serve_logs

    class Kept(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    serve_logger, kept = logging.getLogger("ray.serve"), Kept()
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in OUR_LOGGERS}
    serve_logger.addHandler(kept)
    try:
        _log_where_serve_logs()
        from serve.error_map import problem_for

        problem_for(E.MetadataError("Redis at redis://10.0.0.5:6379 did not answer"), "req-123")
        assert any("req-123" in line and "10.0.0.5" in line for line in kept.lines), kept.lines
    finally:
        serve_logger.removeHandler(kept)
        for name, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


def test_an_encoder_looked_up_while_its_memory_was_deleted_is_not_cached():
    """A lookup in flight when this replica deleted (and made again) the memory cached the old
    memory's encoder for a minute: the new one's texts went through the wrong encoder."""
    import asyncio

    from serve.service import MemoryService

    class Registry:  # the one call MemoryService makes of the cluster here
        def __init__(self) -> None:
            self.encoder, self.answer = "hash", asyncio.Event()

        async def memory_config(self, tenant: str, name: str) -> dict:
            encoder = self.encoder  # read before the delete ...
            await self.answer.wait()  # ... answered after it
            return {"encoder": encoder}

    async def run() -> None:
        registry = Registry()
        service = MemoryService(registry, encode=None)
        lookup = asyncio.create_task(service.encoder_of("acme", "notes"))
        await asyncio.sleep(0)
        service.forget("acme", "notes")  # deleted and made again with another encoder
        registry.encoder = "minilm"
        registry.answer.set()
        assert await lookup == "hash"  # the call that raced the delete saw the old one ...
        assert await service.encoder_of("acme", "notes") == "minilm"  # ... but did not cache it

    asyncio.run(run())


def test_a_retryable_503_is_logged_as_a_warning_and_an_unexpected_5xx_as_an_error(caplog):
    """A busy memory is an expected, retried state: an operator's error alerts are for faults."""
    caplog.set_level(logging.WARNING, logger="serve.error_map")
    assert problem_for(E.Busy("memory acme/x is busy"), "rid-2").status == 503
    assert problem_for(RuntimeError("boom"), "rid-3").status == 500
    assert problem_for(E.MetadataError("Redis is unreachable"), "rid-4").status == 503  # an outage: a fault
    levels = {record.getMessage().split(":")[0]: record.levelno for record in caplog.records}
    assert levels == {"request rid-2": logging.WARNING, "request rid-3": logging.ERROR,
                      "request rid-4": logging.ERROR}
