"""`neural_memory.Client` / `AsyncClient` against the real session gateway (and, for retries,
a real loopback HTTP server that misbehaves on purpose)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import errors as E
from serve import schemas as S


def test_every_call_round_trips_typed(nm, fresh_name):
    created = nm.create_memory(fresh_name, {"encoder": "hash"})
    assert isinstance(created, S.CreateMemoryResponse) and created.name == fresh_name
    first = nm.observe(fresh_name, "Grokking is delayed generalization after overfitting.",
                       domain="ml")
    second = nm.observe(fresh_name, "Python blocks are delimited by indentation.")
    assert isinstance(first, S.ObserveResponse) and second.step == 2
    assert len({created.weight_hash, first.weight_hash, second.weight_hash}) == 3
    assert nm.surprise(fresh_name, "Python blocks are delimited by indentation.").score < 0.5
    answer = nm.infer(fresh_name, "What is grokking?", top_k=2)
    assert "Grokking" in answer.response and answer.attention_weights[0].pattern.startswith("Grokking")
    assert nm.attention_map(fresh_name, "indentation").attention_weights
    assert nm.explain(fresh_name, top_k=2).patterns
    stats = nm.stats(fresh_name)
    assert (stats.total_observations, stats.weight_hash, stats.domains) == (2, second.weight_hash, ["ml"])
    assert stats.patterns == 2 and stats.size_mb is not None and stats.size_mb > 0

    saved = nm.checkpoint(fresh_name, "v1", "two facts")
    assert [c.tag for c in nm.list_checkpoints(fresh_name).checkpoints] == ["v1"]
    nm.observe(fresh_name, "An experiment to undo.")
    restored = nm.restore(fresh_name, "v1")
    assert restored.weight_hash == saved.weight_hash == nm.stats(fresh_name).weight_hash
    branch = f"{fresh_name}-b"
    assert nm.fork(fresh_name, branch, source_tag="v1").new_hash == saved.weight_hash
    assert nm.consolidate(branch).stability_score >= 0
    names = {m.name for m in nm.list_memories().memories}
    assert {fresh_name, branch} <= names
    assert any(n.name == branch and n.parent for n in nm.lineage().memories)
    assert nm.delete_memory(branch) == S.DeleteMemoryResponse(deleted=True, name=branch)
    nm.delete_memory(fresh_name)
    with pytest.raises(E.MemoryNotFound):
        nm.stats(fresh_name)


def test_server_errors_come_back_as_our_exception_classes(nm, gateway, fresh_name):
    from neural_memory import Client

    with pytest.raises(E.MemoryNotFound):
        nm.infer(fresh_name, "anything")
    nm.create_memory(fresh_name, {"encoder": "hash"})
    try:
        with pytest.raises(E.MemoryExists):
            nm.create_memory(fresh_name)
        nm.checkpoint(fresh_name, "t1")
        with pytest.raises(E.CheckpointConflict):
            nm.checkpoint(fresh_name, "t1")
        with pytest.raises(E.CheckpointNotFound):
            nm.restore(fresh_name, "never-made")
        with pytest.raises(E.InvalidInput):
            nm.create_memory(f"{fresh_name}-x", {"encoder": "no-such-encoder"})
        with Client(gateway.base_url, api_key="wrong-key") as stranger:
            with pytest.raises(E.AuthError):
                stranger.stats(fresh_name)
        with Client(gateway.base_url, api_key=gateway.key_b) as other_tenant:
            with pytest.raises(E.MemoryNotFound):  # names are scoped by the key's tenant
                other_tenant.stats(fresh_name)
    finally:
        nm.delete_memory(fresh_name)


def test_bad_arguments_are_refused_before_any_request():
    from neural_memory import Client

    with Client("http://127.0.0.1:9", retries=0) as offline:  # nothing listens on port 9
        with pytest.raises(E.InvalidInput, match="context"):
            offline.observe("notes", "   ")
        with pytest.raises(E.InvalidInput, match="memory name"):
            offline.stats("../etc")
        with pytest.raises(E.InvalidInput, match="top_k"):
            offline.infer("notes", "q", top_k=0)
        with pytest.raises(E.InvalidInput, match=r"steps must be \(from, to\)"):  # was an IndexError
            offline.forget("notes", steps=(1,))
        with pytest.raises(E.InvalidInput, match="job_id"):  # was an AttributeError
            offline.wait_for_forget("notes", 123)
        with pytest.raises(TypeError):  # keyword-only: a fifth positional was taken for the transport
            Client("http://127.0.0.1:9", None, 60, 2, 30)
        with pytest.raises(E.Unavailable, match="cannot reach"):
            offline.list_memories()


def test_async_client_concurrent_writes(gateway, fresh_name):
    from neural_memory import AsyncClient

    async def scenario() -> tuple[int, set[int]]:
        async with AsyncClient(gateway.base_url, api_key=gateway.key_a, timeout=120) as nm:
            await nm.create_memory(fresh_name, {"encoder": "hash"})
            try:
                results = await asyncio.gather(
                    *(nm.observe(fresh_name, f"fact number {i} about topic {i * 7}") for i in range(6)))
                return (await nm.stats(fresh_name)).total_observations, {r.step for r in results}
            finally:
                await nm.delete_memory(fresh_name)

    total, steps = asyncio.run(scenario())
    assert total == 6 and steps == set(range(1, 7))


def test_url_and_key_from_the_environment(gateway, monkeypatch, fresh_name):
    from neural_memory import Client

    monkeypatch.setenv("NMEM_URL", gateway.base_url)
    monkeypatch.setenv("NMEM_API_KEY", gateway.key_a)
    with Client() as nm:
        assert nm.url == gateway.base_url
        with pytest.raises(E.MemoryNotFound):
            nm.stats(fresh_name)


class _Flaky(BaseHTTPRequestHandler):
    """503 for the first `failures` requests of each path, then a valid observe result."""

    failures = 2
    seen: list[tuple[str, str | None]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).seen.append((self.path, self.headers.get("Idempotency-Key")))
        if "/drop" in self.path:  # the request arrived; the answer is lost on the way back
            self.close_connection = True
            return
        attempts = sum(1 for path, _ in self.seen if path == self.path)
        if attempts <= self.failures:
            self._reply(503, {"error": {"code": "unavailable", "message": "restarting"}})
        elif self.path.endswith("/observe"):
            self._reply(200, {"surprise": 1.0, "weight_delta": 0.1, "patterns_activated": [],
                              "step": 1, "weight_hash": "h"})
        else:
            self._reply(201, {"name": "x", "weight_hash": "h", "weight_parameters": 1})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def flaky_server():
    _Flaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_503_is_retried_with_one_idempotency_key_per_write(flaky_server):
    from neural_memory import Client
    from neural_memory._calls import IDEMPOTENCY_HEADER

    assert IDEMPOTENCY_HEADER == "Idempotency-Key"
    with Client(flaky_server, retries=2) as nm:
        assert nm.observe("notes", "hello").step == 1
        assert nm.observe("other", "hello", request_id="my-write-1").step == 1
    keys_first = {key for path, key in _Flaky.seen if path.endswith("/notes/observe")}
    keys_second = {key for path, key in _Flaky.seen if path.endswith("/other/observe")}
    assert len(_Flaky.seen) == 6
    assert len(keys_first) == 1 and None not in keys_first  # the same key on all 3 attempts
    assert keys_second == {"my-write-1"}


def test_retries_give_up_with_the_servers_error(flaky_server):
    from neural_memory import Client

    with Client(flaky_server, retries=1) as nm:
        with pytest.raises(E.Unavailable, match="restarting"):
            nm.create_memory("x")
    assert len(_Flaky.seen) == 2


def test_a_write_whose_answer_was_lost_is_not_sent_twice(flaky_server):
    from neural_memory import Client
    from neural_memory._calls import SERVER_DEDUPES_OBSERVE

    with Client(flaky_server, retries=3) as nm:
        with pytest.raises(E.Unavailable, match="lost the connection"):
            nm.fork("drop", "copy")  # reached the server: resending could fork twice
        with pytest.raises(E.Unavailable):
            nm.observe("drop", "text")
    forks = [p for p, _ in _Flaky.seen if p.endswith("/drop/fork")]
    observes = [p for p, _ in _Flaky.seen if p.endswith("/drop/observe")]
    assert len(forks) == 1
    # Until the server deduplicates by request id, a lost observe is not resent either.
    assert len(observes) == (4 if SERVER_DEDUPES_OBSERVE else 1)


def test_import_is_light():
    code = ("import sys, neural_memory; heavy = [m for m in ('ray', 'torch', 'numpy', 'fastapi') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importable_only_as_neural_memory():
    out = subprocess.run([sys.executable, "-c", "import serve.client"], capture_output=True,
                         text=True)
    assert out.returncode != 0 and "import this package as `neural_memory`" in out.stderr


def test_a_proxys_502_or_504_resends_only_what_the_server_deduplicates():
    """A proxy's 504 (its upstream timeout) comes after the server may have done the call: a
    create was resent and reported MemoryExists for the memory it had just made; consolidate
    ran twice. Only a write the server deduplicates (observe, by request id) is resent."""
    import asyncio

    import httpx
    from fastapi import FastAPI

    from neural_memory import AsyncClient

    app, done = FastAPI(), []

    @app.post("/v1/memories")
    async def create(body: dict) -> dict:
        done.append(("create", body["name"]))
        return {"name": body["name"], "weight_hash": "h", "weight_parameters": 1}

    @app.post("/v1/memories/{name}/observe")
    async def observe(name: str, body: dict) -> dict:
        done.append(("observe", body["request_id"]))
        return {"surprise": 0.5, "weight_delta": 0.1, "patterns_activated": [], "step": 1, "weight_hash": "h"}

    class ProxyTimingOut(httpx.AsyncBaseTransport):
        """Forwards every request; answers the first of each path with 504, as a proxy whose
        upstream timeout fired while the server was working."""

        def __init__(self) -> None:
            self.server, self.seen = httpx.ASGITransport(app=app), set()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            answer = await self.server.handle_async_request(request)
            if request.url.path in self.seen:
                return answer
            self.seen.add(request.url.path)
            return httpx.Response(504, text="<html>504 Gateway Time-out</html>")

    async def run() -> None:
        async with AsyncClient("http://gw", transport=ProxyTimingOut()) as nm:
            with pytest.raises(E.Unavailable, match="may or may not have been done"):
                await nm.create_memory("notes")
            assert (await nm.observe("notes", "a fact")).step == 1
        assert done[0] == ("create", "notes") and len(done) == 3  # the create once, the observe twice
        assert done[1] == done[2] and done[1][0] == "observe"

    asyncio.run(run())


def test_a_rate_limited_call_waits_its_retry_after_and_goes_through():
    """The gateway's own rate-limit middleware on a tiny app: a 429 rate_limited is refused
    before anything is done, so the client waits Retry-After and sends it again (up to
    rate_limit_wait); a 429 quota_exceeded will not clear by waiting and is raised at once."""
    import asyncio

    import httpx
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from neural_memory import AsyncClient
    from serve.auth import Authenticator
    from serve.http_middleware import RequestContextMiddleware
    from serve.limits import AdmissionMiddleware

    app, created = FastAPI(), []

    @app.post("/v1/memories")
    async def create(body: dict) -> JSONResponse:
        if body["name"] == "over-quota":
            return JSONResponse({"error": {"code": "quota_exceeded", "message": "quota: at most 1"}},
                                status_code=429, headers={"Retry-After": "1"})
        created.append(body["name"])
        return JSONResponse({"name": body["name"], "weight_hash": "h", "weight_parameters": 1}, status_code=201)

    app.add_middleware(AdmissionMiddleware, auth=Authenticator.from_keys({"key-a-0000": "tenant-a", "key-b-0000": "tenant-b"}), rate=2.0, burst=1, max_in_flight=0)
    app.add_middleware(RequestContextMiddleware)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with AsyncClient("http://gw", api_key="key-a-0000", transport=transport) as nm:
            started = time.monotonic()
            for i in range(3):  # burst 1, then 2/s: the 2nd and 3rd are refused once each, then pass
                assert (await nm.create_memory(f"m{i}")).name == f"m{i}"
            assert created == ["m0", "m1", "m2"] and time.monotonic() - started >= 1.0
            await asyncio.sleep(1.0)
            with pytest.raises(E.QuotaExceeded):
                await nm.create_memory("over-quota")
        async with AsyncClient("http://gw", api_key="key-b-0000", transport=transport, rate_limit_wait=0) as nm:
            await nm.create_memory("b0")
            with pytest.raises(E.RateLimited, match="NMEM_RATE_LIMIT_PER_SECOND"):
                await nm.create_memory("b1")  # told not to wait
        assert created == ["m0", "m1", "m2", "b0"]

    asyncio.run(run())


@pytest.mark.parametrize("options, words", [
    ({"timeout": 0}, "timeout"), ({"timeout": -1}, "timeout"), ({"timeout": float("nan")}, "timeout"),
    ({"retries": -1}, "retries"), ({"retries": 1.5}, "retries"), ({"rate_limit_wait": -5}, "rate_limit_wait"),
    ({"url": "http://127.0.0.1:8000/v1"}, "without /v1"), ({"url": "http://127.0.0.1:8000/mcp/"}, "without /mcp"),
])
def test_client_options_are_checked_when_it_is_made(options, words):
    from neural_memory import AsyncClient, Client

    for cls in (Client, AsyncClient):
        with pytest.raises(E.InvalidInput, match=words):
            cls(**{"url": "http://127.0.0.1:8000", **options})


def test_a_closed_client_and_a_text_of_another_type_say_so(gateway):
    from neural_memory import Client

    with Client(gateway.base_url, api_key=gateway.key_a) as nm:
        for text in (123, None, b"bytes text"):
            with pytest.raises(E.InvalidInput, match="text must be a string or a list of strings"):
                nm.observe("default", text)
    with pytest.raises(E.InvalidInput, match="was closed"):
        nm.stats("default")


class _Slow(BaseHTTPRequestHandler):
    """Answers after a second."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        time.sleep(1)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args) -> None:
        pass


def test_a_slow_answer_is_told_as_the_client_timeout():
    from neural_memory import Client

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{server.server_address[1]}", timeout=0.2, retries=0) as nm:
            with pytest.raises(E.Unavailable, match="within the client's timeout of 0.2 s") as read:
                nm.list_memories()
            assert "may or may not have been done" not in str(read.value)  # a read: nothing to check
            with pytest.raises(E.Unavailable, match="may or may not have been done"):  # a create: it may be there
                nm.create_memory("notes")
    finally:
        server.shutdown()
        server.server_close()
