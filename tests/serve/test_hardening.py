"""Hardening of the gateway over real HTTP: bad memory configs refused at create naming the field,
request ids, security headers and the dashboard's CSP, body limits on chunked bodies, 405 with
Allow, readiness, and the per-key rate limit and cap on requests in flight (in process: a tiny app behind the same middleware).
"""

from __future__ import annotations

import math
import re

import httpx
import pytest

from tests.serve.helpers import error_of, ok

# (config, the field the error must name): the values an outside tester used to poison a
# memory, plus each kind of type confusion.
BAD_CONFIGS = [
    ({"familiar_width": 0}, "familiar_width"),
    ({"key_scale": 1e300}, "key_scale"),
    ({"value_bandwidth": 1e300}, "value_bandwidth"),
    ({"seed": 1e30}, "seed"),
    ({"seed": -1}, "seed"),
    ({"replay_passes": 5000}, "replay_passes"),
    ({"replay_items": 10**9}, "replay_items"),
    ({"memory_depth": True}, "memory_depth"),
    ({"memory_width": 1024.5}, "memory_width"),
    ({"lr": "0.1"}, "lr"),
    ({"momentum": 1.5}, "momentum"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"ewc_lambda": -1}, "ewc_lambda"),
    ({"pattern_slots": 65536, "exemplars_per_slot": 64}, "pattern_slots x exemplars_per_slot"),
    ({"max_grad_norm": 0}, "max_grad_norm"),
    ({"encoder": ["hash"]}, "encoder"),  # unhashable: once a 500
    ({"dtype": {"name": "float32"}}, "dtype"),
]


@pytest.mark.parametrize(("config", "field"), BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_bad_memory_config_is_refused_at_create_naming_the_field(api, fresh_name, config, field):
    error = error_of(api.post("/v1/memories", json={"name": fresh_name, "config": config}), 400)
    assert error["code"] == "invalid_input" and field in error["message"], error
    error_of(api.get(f"/v1/memories/{fresh_name}/stats"), 404)  # nothing was created


def test_familiar_cos_nan_is_refused(api, fresh_name):
    raw = '{"name": "%s", "config": {"familiar_cos": NaN}}' % fresh_name
    response = api.post("/v1/memories", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text


def test_every_response_has_a_request_id_and_errors_carry_it(api, anon):
    response = api.get("/v1/memories/no-such-memory-here/stats")
    error = error_of(response, 404)
    assert error["request_id"] == response.headers["x-request-id"]
    mine = anon.get("/healthz", headers={"X-Request-Id": "trace-me-123"})
    assert mine.headers["x-request-id"] == "trace-me-123"
    assert "," not in api.get("/v1/memories").headers["x-request-id"]  # one id, echoed once
    traced = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"  # a load balancer's
    assert anon.get("/healthz", headers={"X-Request-Id": traced}).headers.get_list("x-request-id") == [traced]


@pytest.mark.parametrize("bad_id", ["two words", "x" * 129, "caf\u00e9"])
def test_a_malformed_request_id_is_refused_and_answered_with_one_id(anon, bad_id):
    response = anon.get("/healthz", headers={"X-Request-Id": bad_id.encode()})  # UTF-8: Serve 500s on other bytes
    error = error_of(response, 400)
    assert error["code"] == "invalid_input" and "X-Request-Id" in error["message"], error
    assert len(error["request_id"]) == 32  # one made here, as every error body carries
    assert len(response.headers.get_list("x-request-id")) <= 1  # Serve echoes the caller's; no second one
    assert response.headers["x-content-type-options"] == "nosniff"


def test_security_headers_and_the_dashboard_csp(anon):
    for path in ("/", "/ui/app.js", "/healthz", "/openapi.json"):
        headers = anon.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["referrer-policy"] == "no-referrer", path
    csp = anon.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp


def test_a_chunked_body_over_the_limit_is_413(api):
    def chunks():
        for _ in range(3):  # 3 MB without a Content-Length, over the 1 MB default
            yield b"x" * 1_000_000

    response = api.post("/v1/memories", content=chunks(), headers={"content-type": "application/json"})
    assert error_of(response, 413)["code"] == "payload_too_large"


def _stalled_post(gateway, key: str | None, trickle: float | None = None) -> tuple[bytes, bytes, float]:
    """POST a body that says 100 bytes and sends the first 14, then nothing (or one byte every
    `trickle` seconds); (head, body, seconds until the answer began)."""
    import socket
    import threading
    import time
    from urllib.parse import urlsplit

    where = urlsplit(gateway.base_url)
    with socket.create_connection((where.hostname, where.port), timeout=60) as stalled:
        auth = b"Authorization: Bearer " + key.encode() + b"\r\n" if key else b""
        stalled.sendall(b"POST /v1/memories HTTP/1.1\r\nHost: " + where.netloc.encode()
                        + b"\r\nContent-Type: application/json\r\n" + auth
                        + b"Content-Length: 100\r\n\r\n" + b'{"name": "half')
        answered = threading.Event()

        def drip() -> None:
            while not answered.wait(trickle):
                try:
                    stalled.sendall(b"x")
                except OSError:
                    return

        if trickle:
            threading.Thread(target=drip, daemon=True).start()
        began = time.monotonic()
        answer = stalled.recv(65536)
        waited = time.monotonic() - began
        answered.set()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 "), answer
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
        while len(body) < length:  # the body may come in a segment of its own
            more = stalled.recv(65536)
            assert more, answer + body
            body += more
    return head, body, waited


@pytest.mark.parametrize("trickle", [None, 0.5], ids=["stopped", "one-byte-every-half-second"])
def test_a_body_that_stops_or_trickles_is_refused_with_408_and_frees_its_slot(gateway, api, trickle):
    """A client that sent part of its body and went quiet, or sent a byte now and then, held
    its request slot for minutes (about 200 of them stalled every tenant)."""
    from tests.fixtures.gateway import STALL_SECONDS

    head, body, waited = _stalled_post(gateway, gateway.key_a, trickle)
    assert head.startswith(b"HTTP/1.1 408"), head + body
    assert b"request_timeout" in body and b"or stopped" in body, head + body
    assert STALL_SECONDS - 1 <= waited < STALL_SECONDS + 20, waited
    assert ok(api.get("/healthz"))["status"] == "ok"


def test_a_request_without_a_key_is_refused_before_its_body_is_read(gateway):
    """Without a key a slow body held a request slot until the stall limit, and was then told 408."""
    head, body, waited = _stalled_post(gateway, None)
    assert head.startswith(b"HTTP/1.1 401") and b"missing API key" in body, head + body
    assert waited < 3, waited


def test_one_key_cannot_hold_every_request_slot_with_slow_bodies(gateway, api):
    """A keyed client opening hundreds of slow bodies (each fast enough for the stall rule) held
    every gateway slot: now its requests past the per-key cap are refused at once and other keys
    are served."""
    import socket
    import threading
    import time
    from urllib.parse import urlsplit

    from serve.settings import GatewaySettings

    cap = GatewaySettings.model_fields["max_in_flight_per_key"].default  # the session gateway's
    where = urlsplit(gateway.base_url)
    stalled, done = [], threading.Event()

    def drip() -> None:  # 2 KiB a second on each: within the stall rule, far from the end
        while not done.wait(1.0):
            for sock in list(stalled):
                try:
                    sock.sendall(b"x" * 2048)
                except OSError:
                    pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        for _ in range(cap):
            sock = socket.create_connection((where.hostname, where.port), timeout=30)
            sock.sendall(b"POST /v1/memories HTTP/1.1\r\nHost: " + where.netloc.encode()
                         + b"\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + gateway.key_a.encode()
                         + b"\r\nContent-Length: 900000\r\n\r\n{\"name\": \"")
            stalled.append(sock)
        deadline = time.monotonic() + 20
        while (refused := api.get("/v1/memories")).status_code != 429:  # until all are admitted
            assert time.monotonic() < deadline, refused.text
            time.sleep(0.1)
        error = error_of(refused, 429)
        assert error["code"] == "rate_limited" and "NMEM_MAX_IN_FLIGHT_PER_KEY" in error["message"], error
        assert int(refused.headers["retry-after"]) >= 1
        other = httpx.get(f"{gateway.base_url}/v1/memories", headers={"Authorization": f"Bearer {gateway.key_b}"})
        assert other.status_code == 200, other.text
    finally:
        done.set()
        dripper.join()
        for sock in stalled:
            sock.close()
    deadline = time.monotonic() + 10
    while api.get("/v1/memories").status_code != 200:  # the slots are given back when they end
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_server_on_loopback_refuses_what_a_web_page_of_another_site_sends(gateway, api, fresh_name):
    """DNS rebinding: a page whose own name resolves to 127.0.0.1 read, wrote and deleted every
    memory (REST and the dashboard took any Host; only /mcp checked it). A form posted from any
    site ran consolidate (its body is optional, so text/plain passed)."""
    from urllib.parse import urlsplit

    ok(api.post("/v1/memories", json={"name": fresh_name, "config": {"encoder": "hash"}}), 201)
    port = urlsplit(gateway.base_url).port
    rebound = {"Host": f"attacker.example:{port}"}
    for method, path in (("GET", f"/v1/memories/{fresh_name}/history"), ("DELETE", f"/v1/memories/{fresh_name}"),
                         ("GET", "/"), ("GET", "/healthz")):
        error = error_of(api.request(method, path, headers=rebound), 421)
        assert error["code"] == "misdirected_request" and "127.0.0.1" in error["message"], error
    for odd in (f"attacker@127.0.0.1:{port}", f"127.0.0.1:{port}/evil", "127.0.0.1:abc"):  # not a Host's form
        error_of(api.get(f"/v1/memories/{fresh_name}/stats", headers={"Host": odd}), 421)
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:  # clients will not send two
        raw.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: attacker.example\r\n"
                    "Connection: close\r\n\r\n".encode())
        assert raw.recv(65536).startswith(b"HTTP/1.1 400")
    mcp = api.post("/mcp", headers={**rebound, "Accept": "application/json, text/event-stream"},
                   json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert mcp.status_code == 421 and "misdirected_request" in mcp.json()["error"]["message"], mcp.text
    before = ok(api.get(f"/v1/memories/{fresh_name}/stats"))["weight_hash"]
    for origin in ("https://evil.example", "null"):
        posted = api.post(f"/v1/memories/{fresh_name}/consolidate", content=b"x",
                          headers={"Origin": origin, "Content-Type": "text/plain"})
        assert error_of(posted, 403)["code"] == "forbidden", posted.text
    assert ok(api.get(f"/v1/memories/{fresh_name}/stats"))["weight_hash"] == before
    # this machine's names and pages (the dashboard, a local MCP inspector) are served
    assert ok(api.get(f"/v1/memories/{fresh_name}/stats", headers={"Host": f"localhost:{port}"}))
    assert ok(api.get(f"/v1/memories/{fresh_name}/stats", headers={"Origin": f"http://127.0.0.1:{port}"}))
    assert ok(api.get(f"/v1/memories/{fresh_name}/stats", headers={"Origin": "http://localhost:6274"}))
    api.delete(f"/v1/memories/{fresh_name}")


def test_an_unsupported_method_is_405_with_allow(api):
    response = api.request("TRACE", "/v1/memories")
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_readiness_reports_each_dependency(anon):
    body = ok(anon.get("/readyz"))
    assert body["status"] == "ok"
    assert body["checks"] == {"metadata": "ok", "checkpoints": "ok", "actors": "ok", "encoder": "ok"}
    assert ok(anon.get("/healthz"))["checks"] == body["checks"]


def _two_keys():
    from serve.auth import Authenticator

    return Authenticator.from_keys({"key-a-0000": "tenant-a", "key-b-0000": "tenant-b"})


# One key spelt as authentication accepts it: each spelling had a bucket and a cap of its own.
SPELLINGS_OF_KEY_A = ["Bearer key-a-0000", "bearer key-a-0000", "BEARER  key-a-0000", " Bearer key-a-0000 "]


def test_rate_limit_refuses_with_429_retry_after_and_names_the_limit():
    """The middleware the gateway installs, on a tiny app: per key, burst then rate."""
    from fastapi import FastAPI

    from serve.http_middleware import RequestContextMiddleware
    from serve.limits import AdmissionMiddleware

    app = FastAPI()

    @app.get("/v1/ping")
    async def ping() -> dict:
        return {"pong": True}

    app.add_middleware(AdmissionMiddleware, auth=_two_keys(), rate=0.5, burst=3, max_in_flight=0)
    app.add_middleware(RequestContextMiddleware)
    transport = httpx.ASGITransport(app=app)

    async def run() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            a = {"Authorization": "Bearer key-a-0000"}
            assert [(await client.get("/v1/ping", headers=a)).status_code for _ in range(3)] == [200] * 3
            refused = await client.get("/v1/ping", headers=a)
            error = error_of(refused, 429)
            assert error["code"] == "rate_limited" and "NMEM_RATE_LIMIT_PER_SECOND" in error["message"]
            assert 1 <= int(refused.headers["retry-after"]) <= math.ceil(1 / 0.5)
            for spelling in SPELLINGS_OF_KEY_A:  # the same key, the same bucket
                error_of(await client.get("/v1/ping", headers={"Authorization": spelling}), 429)
            # Callers without a known key share one bucket, whatever key or address they claim
            # (X-Forwarded-For picked a bucket per address: a free one for every guess at a key).
            guesses = [{"Authorization": f"Bearer guess-{i:04d}", "X-Forwarded-For": f"10.0.0.{i}"} for i in range(4)]
            statuses = [(await client.get("/v1/ping", headers=guess)).status_code for guess in guesses]
            assert statuses == [200, 200, 200, 429], statuses

    import asyncio

    asyncio.run(run())


def test_the_limits_apply_under_a_route_prefix_too():
    """Under a Serve route prefix (root_path), the limits looked at the whole path and let every
    request through."""
    from fastapi import FastAPI

    from serve.http_middleware import RequestContextMiddleware
    from serve.limits import AdmissionMiddleware

    app = FastAPI(root_path="/nmem")

    @app.get("/v1/ping")
    async def ping() -> dict:
        return {"pong": True}

    app.add_middleware(AdmissionMiddleware, auth=_two_keys(), rate=0.5, burst=2, max_in_flight=0)
    app.add_middleware(RequestContextMiddleware)
    transport = httpx.ASGITransport(app=app, root_path="/nmem")

    async def run() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw/nmem") as client:
            a = {"Authorization": "Bearer key-a-0000"}
            assert [(await client.get("/v1/ping", headers=a)).status_code for _ in range(3)] == [200, 200, 429]
            other = await client.get("/v1/ping", headers={"Authorization": "Bearer key-b-0000"})
            assert other.status_code == 200  # buckets are per key

    import asyncio

    asyncio.run(run())


def test_requests_in_flight_are_capped_per_key_and_given_back_when_they_end():
    """The middleware the gateway installs, on a tiny app whose route waits until released (or
    fails): a key's requests past the cap are 429 at once, other keys go on, and every request
    that ends (answered or failed) frees its place."""
    import asyncio

    from fastapi import FastAPI

    from serve.http_middleware import CatchAllMiddleware, RequestContextMiddleware
    from serve.limits import AdmissionMiddleware

    app, release = FastAPI(), {}

    @app.get("/v1/hold")
    async def hold(fail: bool = False) -> dict:
        await release["event"].wait()
        if fail:
            raise RuntimeError("the route failed")
        return {"held": True}

    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(AdmissionMiddleware, auth=_two_keys(), rate=0, burst=1, max_in_flight=3)
    app.add_middleware(RequestContextMiddleware)
    a, b = {"Authorization": "Bearer key-a-0000"}, {"Authorization": "Bearer key-b-0000"}

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            for fail in (False, True):
                release["event"] = asyncio.Event()
                held = [asyncio.create_task(client.get("/v1/hold", params={"fail": fail},
                                                       headers={"Authorization": spelling}))
                        for spelling in SPELLINGS_OF_KEY_A[:3]]
                await asyncio.sleep(0.2)
                error = error_of(await client.get("/v1/hold", headers={"Authorization": SPELLINGS_OF_KEY_A[3]}), 429)
                assert "at most 3 may be under way per API key" in error["message"], error
                other = asyncio.create_task(client.get("/v1/hold", headers=b))
                await asyncio.sleep(0.2)
                release["event"].set()
                statuses = [r.status_code for r in await asyncio.gather(*held)]
                assert statuses == [500 if fail else 200] * 3 and (await other).status_code == 200
            # every place was given back: three at once are admitted again
            release["event"] = asyncio.Event()
            again = [asyncio.create_task(client.get("/v1/hold", headers=a)) for _ in range(3)]
            await asyncio.sleep(0.2)
            release["event"].set()
            assert [r.status_code for r in await asyncio.gather(*again)] == [200] * 3

    asyncio.run(run())


def test_nul_in_a_checkpoint_description_is_refused(api, fresh_name):
    ok(api.post("/v1/memories", json={"name": fresh_name, "config": {"encoder": "hash"}}), 201)
    response = api.post(f"/v1/memories/{fresh_name}/checkpoints", json={"tag": "v1", "description": "a\x00b"})
    assert response.status_code in (400, 422), response.text
    assert ok(api.get(f"/v1/memories/{fresh_name}/checkpoints"))["checkpoints"] == []
    api.delete(f"/v1/memories/{fresh_name}")
