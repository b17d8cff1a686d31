"""`neural-memory serve --ingress haproxy`: Ray Serve's HAProxy ingress in front of the gateway.

A real server process (its own local Ray, embedded Valkey, a tmp data dir): HAProxy, not Serve's
Python proxy, holds the configured port; REST and MCP (streamable HTTP) work through it; its
files live in a private temp dir; a stop leaves no HAProxy process or file behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from serve.ports import free_port
from tests.serve.helpers import ok
from tests.serve.server_process import Server, session_processes
from tests.serve.test_mcp import call, mcp_client


def _haproxy_configs(session: int) -> dict[int, Path]:
    """pid -> config file of every HAProxy process in the server's session."""
    found = {}
    for entry in session_processes(session):
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue  # gone meanwhile
        if Path(argv[0]).name == "haproxy" and "-f" in argv:
            found[int(entry.name)] = Path(argv[argv.index("-f") + 1])
    return found


@pytest.mark.slow
def test_haproxy_ingress_serves_rest_and_mcp_on_the_port_and_stops_clean(tmp_path):
    port = free_port()
    server = Server(tmp_path / "data", port, tmp_path / "serve.log", {"NMEM_INGRESS": "haproxy"})
    try:
        server.wait_ready()
        banner = re.search(r"ingress: haproxy \(its stats page :(\d+) and metrics :(\d+)", server.log.read_text())
        assert banner, server.log.read_text()[-2000:]
        configs = _haproxy_configs(server.process.pid)
        assert configs, "no HAProxy process in the server's session"
        config = next(iter(configs.values()))
        assert f"bind 127.0.0.1:{port}" in config.read_text()  # HAProxy holds the public port
        assert f"bind *:{banner[1]}" in config.read_text()  # the banner names the wide listeners
        assert f"bind :{banner[2]}" in config.read_text()
        assert "/nmem-haproxy-" in str(config)  # a private dir, not Ray's shared /tmp/haproxy-serve

        with httpx.Client(base_url=server.url, timeout=120) as api:
            ok(api.post("/v1/memories", json={"name": "notes", "config": {"encoder": "hash"}}), 201)
            learned = ok(api.post("/v1/memories/notes/observe",
                                  json={"contexts": ["The staging database is db-7.", "Backups run at 02:00."]}))
            assert len(learned["items"]) == 2
            answer = ok(api.post("/v1/memories/notes/infer", json={"prompt": "The staging database is db-7."}))
            assert answer["response"] == "The staging database is db-7."

        async def over_mcp() -> dict:
            async with mcp_client(f"{server.url}/mcp", None) as client:
                await call(client, "observe", memory="notes", context="Deploys need two approvals.")
                return await call(client, "stats", memory="notes")

        assert anyio.run(over_mcp)["total_observations"] == 3

        assert server.stop() == 0, server.log.read_text()[-4000:]
        assert not _haproxy_configs(server.process.pid), "HAProxy outlived the server"
        assert not config.parent.exists(), "the HAProxy temp dir was left behind"
    finally:
        server.stop()


def test_haproxy_ingress_on_an_existing_ray_cluster_is_refused_with_what_to_set_instead(tmp_path):
    cli = Path(sys.executable).with_name("neural-memory")
    done = subprocess.run([str(cli), "serve", "--ingress", "haproxy", "--ray-address", "127.0.0.1:6379",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "RAY_SERVE_ENABLE_HA_PROXY=1" in done.stderr and "RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in done.stderr
    assert not list(tmp_path.iterdir()), "something was started before the refusal"
