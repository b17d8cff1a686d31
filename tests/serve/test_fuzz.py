"""Schemathesis over /openapi.json with both tenants' keys: no generated request gets a 5xx.

Schemathesis's own CLI (`st run`): its pytest plugin does not run under this pytest. Bounded
(few examples per operation, the coverage phase's boundary values included) so it fits the
suite; memories it happens to create are deleted afterwards.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

MAX_EXAMPLES = 4


def _names(gateway, tenant: str) -> set[str]:
    body = httpx.get(f"{gateway.base_url}/v1/memories", headers=gateway.headers(tenant), timeout=120).json()
    return {m["name"] for m in body["memories"]}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("which", ["a", "b"])
def test_no_generated_request_gets_a_server_error(gateway, which, tmp_path):
    tenant = gateway.tenant_a if which == "a" else gateway.tenant_b
    before = _names(gateway, tenant)
    command = [
        str(Path(sys.executable).with_name("st")), "run", f"{gateway.base_url}/openapi.json",
        "--header", f"Authorization: Bearer {gateway.keys[tenant]}",
        "--checks", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing", "--include-path-regex", "^/v1/",
        "--exclude-method", "PUT",  # the image upload: a binary media type it cannot generate
        "--request-timeout", "120", "--workers", "1", "--seed", "1",
        "--generation-database", "none",
    ]
    try:
        # Its working directory takes the CLI's cache (.schemathesis/), not the repository.
        run = subprocess.run(command, capture_output=True, text=True, timeout=840, cwd=tmp_path)
    finally:
        for name in _names(gateway, tenant) - before:
            httpx.delete(f"{gateway.base_url}/v1/memories/{name}", headers=gateway.headers(tenant), timeout=120)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
