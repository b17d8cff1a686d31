"""The README's shell examples work as written.

Starts `neural-memory serve` as the README's reader would (loopback, auth off, a fresh data
dir), then runs every ```bash block of the sections that talk to a running server, with only the
address changed to this server's free port. Blocks that need an API key (`$KEY`) are the auth
examples, covered by tests/serve/test_auth_e2e.py; the `make` block is what CI itself runs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from serve.ports import free_port
from tests.serve.server_process import Server

README = Path(__file__).resolve().parents[2] / "README.md"
SERVER_SECTIONS = ("Use it over REST", "Use it over MCP")


def shell_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", body, flags=re.S)


def json_documents(output: str) -> list[dict]:
    """Every JSON object printed one after another (curl -s prints no newline between them)."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(output):
        if output[at].isspace():
            at += 1
            continue
        doc, at = decoder.raw_decode(output, at)
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readme")
    server = Server(tmp / "data", free_port(), tmp / "serve.log",
                    {"NMEM_API_KEYS": "", "NMEM_API_KEYS_FILE": ""})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _run(block: str, server: Server) -> str:
    port = server.url.rsplit(":", 1)[1]
    script = block.replace("localhost:8000", f"localhost:{port}").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"README block failed ({done.returncode}):\n{script}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_forget_examples_run_as_written(readme_server):
    (block,) = shell_blocks("Forget on request")
    created, observed, job, audit = json_documents(_run(block, readme_server))
    assert created["name"] == "private-rest" and observed["step"] == 2
    assert (job["status"], job["exact"], job["forgotten"]) == ("done", True, 1)
    assert audit["records"][-1]["job_id"] == job["job_id"] and "Dana" not in json.dumps(audit)


@pytest.mark.slow
def test_rest_examples_run_as_written(readme_server):
    (block,) = shell_blocks("Use it over REST")
    docs = json_documents(_run(block, readme_server))
    assert len(docs) == block.count("curl "), docs
    assert not [d for d in docs if "error" in d], docs
    created, observed, surprise, inferred, saved, forked, stats, batch = docs
    assert created["name"] == "notes" and observed["step"] == 1
    assert surprise["score"] < 0.5  # the text it just learned is familiar
    assert "grokking" in inferred["response"].lower()
    assert saved["checkpoint_id"] == "notes:stable-v1" and forked["forked"] is True
    assert stats["total_observations"] == 1 and stats["weight_hash"] == observed["weight_hash"]
    assert [item["step"] for item in batch["items"]] == [2, 3]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is not installed")
def test_mcp_examples_run_as_written(readme_server):
    blocks = [b for b in shell_blocks("Use it over MCP") if "$KEY" not in b]
    assert blocks, "the MCP section lost its examples"
    for block in blocks:
        out = _run(block, readme_server)
        assert '"observe"' in out or '"surprise"' in out, out[-2000:]
