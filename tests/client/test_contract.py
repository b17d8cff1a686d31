"""What the gateway promises about itself: documented errors on every route; the CLI's version."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx


def test_every_route_documents_its_error_envelope(gateway):
    spec = httpx.get(f"{gateway.base_url}/openapi.json", timeout=30).json()
    operations = [(method.upper(), path, op) for path, ops in spec["paths"].items()
                  for method, op in ops.items()]
    assert len(operations) >= 18
    for method, path, op in operations:
        errors = {code: r for code, r in op["responses"].items() if code[0] in "45"}
        enveloped = [code for code, r in errors.items() if "ErrorResponse" in json.dumps(r)]
        assert enveloped, f"{method} {path} documents no ErrorResponse"
    image = spec["paths"]["/v1/memories/{name}/image"]
    assert "413" in image["put"]["responses"]
    assert "application/vnd.neural-memory.image.v1" in image["put"]["requestBody"]["content"]
    assert "application/vnd.neural-memory.image.v1" in image["get"]["responses"]["200"]["content"]


def test_version_flag_prints_the_installed_version():
    script = Path(sys.executable).with_name("neural-memory")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.strip() == f"neural-memory {version('neural-memory-cluster')}"
