"""`neural-memory serve --ingress direct`: the gateway replica's own HTTP server holds the port.

A real server process (its own local Ray, embedded Valkey, a tmp data dir): the process that
listens on the configured port is the gateway replica (no proxy hop); REST and MCP work there;
Serve's proxy, moved to the spare port the banner names, serves the same app; a gateway replica
killed by the OS is replaced and its successor takes the same port again, memories intact.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from serve.ports import free_port
from tests.serve.helpers import ok
from tests.serve.server_process import Server, session_processes
from tests.serve.test_mcp import call, mcp_client


def _listener(port: int, session: int) -> tuple[int, str] | None:
    """(pid, command line) of the process in `session` listening on 127.0.0.1:`port`, if any."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    for entry in session_processes(session):
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name), (entry / "cmdline").read_bytes().decode().replace("\0", " ")
        except OSError:
            continue  # gone meanwhile, or an fd closed under us
    return None


def _wait_for_listener(port: int, session: int, other_than: int | None = None,
                       timeout: float = 180.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _listener(port, session)
        if found and found[0] != other_than:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    return found
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise AssertionError(f"nothing (new) serves port {port} after {timeout:g} s")


@pytest.mark.slow
def test_direct_ingress_serves_from_the_gateway_replica_and_a_replacement_takes_the_port(tmp_path):
    """Started from a folder holding files named like modules it imports: Ray puts the folder a
    server starts in on every worker's import path, and a user's mcp.py there failed the deploy."""
    port = free_port()
    folder = tmp_path / "a-users-project"
    folder.mkdir()
    for module in ("mcp", "errors", "contract", "memory"):
        (folder / f"{module}.py").write_text(f"raise ImportError('the user\'s own {module}.py was imported')\n")
    server = Server(tmp_path / "data", port, tmp_path / "serve.log", {"NMEM_INGRESS": "direct"}, cwd=folder)
    try:
        server.wait_ready()
        banner = re.search(r"ingress: direct \(the gateway replica holds :(\d+); Serve's proxy serves the "
                           r"same app on :(\d+)\)", server.log.read_text())
        assert banner and int(banner[1]) == port, server.log.read_text()[-2000:]
        session = server.process.pid
        pid, command = _wait_for_listener(port, session)
        assert "ServeReplica:neural-memory:Gateway" in command, command  # no proxy in between

        with httpx.Client(base_url=server.url, timeout=120) as api:
            ok(api.post("/v1/memories", json={"name": "notes", "config": {"encoder": "hash"}}), 201)
            learned = ok(api.post("/v1/memories/notes/observe",
                                  json={"contexts": ["The staging database is db-7.", "Backups run at 02:00."]}))
            assert len(learned["items"]) == 2
        with httpx.Client(base_url=f"http://127.0.0.1:{banner[2]}", timeout=120) as proxied:
            assert ok(proxied.get("/v1/memories/notes/stats"))["weight_hash"] == learned["weight_hash"]

        async def over_mcp() -> dict:
            async with mcp_client(f"{server.url}/mcp", None) as client:
                await call(client, "observe", memory="notes", context="Deploys need two approvals.")
                return await call(client, "stats", memory="notes")

        assert anyio.run(over_mcp)["total_observations"] == 3

        os.kill(pid, signal.SIGKILL)  # the OS takes the replica: Serve starts another on the same port
        successor, command = _wait_for_listener(port, session, other_than=pid)
        assert "ServeReplica:neural-memory:Gateway" in command, command
        with httpx.Client(base_url=server.url, timeout=120) as api:
            answer = ok(api.post("/v1/memories/notes/infer", json={"prompt": "The staging database is db-7."}))
            assert answer["response"] == "The staging database is db-7."
            assert ok(api.get("/v1/memories/notes/stats"))["total_observations"] == 3

        assert server.stop() == 0, server.log.read_text()[-4000:]
        assert _listener(port, session) is None
    finally:
        server.stop()


@pytest.mark.parametrize("flags", [["--gateway-replicas", "2"], ["--ray-address", "127.0.0.1:6379"]],
                         ids=["two-replicas", "existing-ray"])
def test_direct_ingress_beyond_one_local_replica_is_refused_with_what_to_use(tmp_path, flags):
    cli = Path(sys.executable).with_name("neural-memory")
    done = subprocess.run([str(cli), "serve", "--ingress", "direct", *flags, "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--ingress haproxy" in done.stderr and "one gateway replica" in done.stderr
    assert not list(tmp_path.iterdir()), "something was started before the refusal"


@pytest.mark.parametrize("given,ray_address,replicas,expected", [
    ("auto", None, 1, "direct"), ("auto", None, 2, "proxy"), ("auto", "10.0.0.5:6379", 1, "proxy"),
    ("proxy", None, 1, "proxy"), ("haproxy", None, 3, "haproxy"), ("direct", None, 1, "direct"),
])
def test_the_default_ingress_is_direct_only_where_one_local_replica_can_hold_the_port(
        given, ray_address, replicas, expected):
    from serve.local import resolve_ingress
    from serve.settings import GatewaySettings

    assert GatewaySettings().ingress == "auto"
    assert resolve_ingress(given, ray_address, replicas) == expected
