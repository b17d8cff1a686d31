"""A third-party MCP client: the MCP Inspector CLI (npm) against the running gateway.

Pinned so a new Inspector release cannot change the test under us; `npx -y` fetches it from
the npm registry on first use and caches it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
NPX = shutil.which("npx")

pytestmark = pytest.mark.skipif(NPX is None, reason="npx (Node.js) is not installed")


def inspector(gateway, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    command = [NPX, "-y", INSPECTOR, "--cli", gateway.mcp_url, "--transport", "http",
               "--format", "json", "--stored-auth-only", *args]
    if key:
        command += ["--header", f"Authorization: Bearer {key}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def result_of(done: subprocess.CompletedProcess, tool_error: bool = False) -> dict:
    """The JSON-RPC result; the CLI exits 5 when a tool answered isError (still printed)."""
    expected = 5 if tool_error else 0
    assert done.returncode == expected, f"inspector exit {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)["result"]


def test_inspector_lists_tools_and_calls_observe_and_infer(gateway):
    tools = result_of(inspector(gateway, "--method", "tools/list", key=gateway.key_a))["tools"]
    assert len(tools) == 15 and {"observe", "infer", "fork"} <= {t["name"] for t in tools}

    memory = f"insp-{uuid.uuid4().hex[:8]}"
    observed = result_of(inspector(
        gateway, "--method", "tools/call", "--tool-name", "observe",
        "--tool-arg", "context=Grokking is delayed generalization after overfitting.",
        f"memory={memory}", key=gateway.key_a), tool_error=True)
    # The memory did not exist: only the default memory is created implicitly.
    assert observed["isError"] is True and "memory_not_found" in observed["content"][0]["text"]

    result_of(inspector(gateway, "--method", "tools/call", "--tool-name", "create_memory",
                        "--tool-arg", f"memory={memory}", key=gateway.key_a))
    observed = result_of(inspector(
        gateway, "--method", "tools/call", "--tool-name", "observe",
        "--tool-arg", "context=Grokking is delayed generalization after overfitting.",
        f"memory={memory}", key=gateway.key_a))
    assert observed["isError"] is False and observed["structuredContent"]["step"] == 1

    inferred = result_of(inspector(
        gateway, "--method", "tools/call", "--tool-name", "infer",
        "--tool-arg", "prompt=What is grokking?", f"memory={memory}", key=gateway.key_a))
    assert inferred["isError"] is False
    assert "grokking" in inferred["structuredContent"]["response"].lower()


def test_inspector_without_a_key_is_refused(gateway):
    done = inspector(gateway, "--method", "tools/list")
    assert done.returncode != 0
    # The gateway answered 401; with --stored-auth-only the CLI reports that auth is required.
    assert "auth_required" in done.stdout + done.stderr
    assert "tools" not in done.stdout
