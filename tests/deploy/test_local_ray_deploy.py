"""Deploy the RayService's own serveConfigV2 onto a `ray start --head` cluster, as compose does.

Changes to the config: only the bind (127.0.0.1 and a free port instead of 0.0.0.0:8000).
The environment is what a pod would get minus the servers: API keys set (auth on), no
NMEM_REDIS_URL / NMEM_S3_ENDPOINT, so storage is the embedded default in a temp data dir.
Then: /healthz, 401 without a key, an MCP tools/list through the real MCP client, and one
REST round trip that starts a memory actor on the cluster.
"""

from __future__ import annotations

import copy
import time

import anyio
import httpx
import httpx2
import pytest
import yaml
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.deploy.local_ray import BIN, LocalRayHead, http_get
from tests.deploy.manifests import serve_config
from serve.ports import free_ports

API_KEY = "deploy-check-key-0123"
TENANT = "acme"
SPEC_TOOLS = {"observe", "infer", "surprise", "consolidate", "checkpoint", "restore", "fork",
              "list_checkpoints", "stats", "attention_map", "explain"}
DEPLOY_TIMEOUT_S = 420  # a hang guard on a busy 2-core machine, not a speed target


def _local_config(port: int) -> dict:
    """The k8s serveConfigV2 with only the bind moved to 127.0.0.1:<port>."""
    original = serve_config()
    config = copy.deepcopy(original)
    config["http_options"].update(host="127.0.0.1", port=port)
    (app,) = config["applications"]
    app["args"].update(host="127.0.0.1", port=port)
    # Guard the claim "the same config": nothing else differs.
    restored = copy.deepcopy(config)
    restored["http_options"].update(original["http_options"])
    restored["applications"][0]["args"].update(original["applications"][0]["args"])
    assert restored == original
    return config


def _wait_until_running(head: LocalRayHead, app_name: str, base_url: str) -> None:
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    app: dict = {}
    while time.monotonic() < deadline:
        app = head.serve_application(app_name)
        if app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
            pytest.fail(f"Serve app {app.get('status')}: {app.get('message')}\n{head.log_tail()}")
        status, _ = http_get(f"{base_url}/healthz")
        if app.get("status") == "RUNNING" and status == 200:
            return
        time.sleep(2)
    pytest.fail(f"Serve app not RUNNING after {DEPLOY_TIMEOUT_S}s (last: {app.get('status')} "
                f"{app.get('message')})\n{head.log_tail()}")


def _serve_deploy(head: LocalRayHead, config_path) -> None:
    """`serve deploy`, retried like compose's `restart: on-failure` if the dashboard drops it."""
    for _ in range(3):
        result = head.run(str(BIN / "serve"), "deploy", str(config_path),
                          "--address", head.dashboard_url)
        if result.returncode == 0:
            return
        if "ConnectionError" not in result.stderr:
            break
        time.sleep(5)
    pytest.fail(f"serve deploy failed:\n{result.stdout}\n{result.stderr[-3000:]}\n{head.log_tail()}")


@pytest.fixture(scope="module")
def deployed():
    """(base_url, head) of the deployed app; the cluster is torn down afterwards."""
    (port,) = free_ports(1)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "NMEM_API_KEYS": f"{API_KEY}:{TENANT}"}
    head = LocalRayHead(env)
    env["NMEM_DATA_DIR"] = str(head.root / "data")
    head.env.update(env)
    with head:
        config = _local_config(port)
        config_path = head.root / "serve-config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        _serve_deploy(head, config_path)
        base_url = f"http://127.0.0.1:{port}"
        _wait_until_running(head, config["applications"][0]["name"], base_url)
        yield base_url, head


def test_healthz(deployed):
    base_url, _ = deployed
    status, body = http_get(f"{base_url}/healthz")
    assert status == 200 and '"ok"' in body


def test_keys_from_the_node_environment_are_enforced(deployed):
    base_url, _ = deployed
    assert httpx.get(f"{base_url}/v1/memories", timeout=30).status_code == 401
    mcp = httpx.post(f"{base_url}/mcp", timeout=30,
                     json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                     headers={"Accept": "application/json, text/event-stream"})
    assert mcp.status_code == 401


def test_mcp_tools_list(deployed):
    base_url, _ = deployed

    async def list_tools() -> set[str]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            async with streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return {tool.name for tool in (await session.list_tools()).tools}

    names = anyio.run(list_tools)
    assert SPEC_TOOLS | {"create_memory", "list_memories", "delete_memory"} <= names


def test_rest_round_trip_starts_a_memory_on_the_cluster(deployed):
    base_url, _ = deployed
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
        created = client.post("/v1/memories", json={"name": "deploy-check"})
        assert created.status_code == 201, created.text
        assert len(created.json()["weight_hash"]) == 64
        listed = client.get("/v1/memories")
        assert listed.status_code == 200, listed.text
        assert "deploy-check" in {m["name"] for m in listed.json()["memories"]}
