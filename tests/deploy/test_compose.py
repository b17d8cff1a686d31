"""docker-compose.yml: valid against the Compose spec, and wired the way the issue asks.

No Docker engine here, so this is what `docker compose config` would check, plus the wiring:
Ray head + worker, Redis with AOF and a password, MinIO with a bucket made at start, the Serve
app deployed from k8s/rayservice.yaml, named volumes, secrets from .env, port 8000.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import jsonschema
import pytest
import yaml

from tests.deploy.manifests import (
    COMPOSE_FILE, COMPOSE_SCHEMA, REPO, compose_variables, interpolate, read_env_file,
    serve_config,
)

ENV_EXAMPLE = REPO / ".env.example"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    """The file as `docker compose` sees it with the committed .env.example as .env."""
    return interpolate(raw, read_env_file(ENV_EXAMPLE))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _command(service: dict) -> str:
    cmd = service.get("command", "")
    return cmd if isinstance(cmd, str) else " ".join(cmd)


def test_validates_against_compose_spec(compose):
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)


def test_compose_spec_validation_catches_a_typo(compose):
    """The schema really is strict here: a misspelt service key is rejected."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError, match="helthcheck"):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_every_variable_is_in_env_example():
    """A fresh `cp .env.example .env` leaves no variable unset (compose would refuse)."""
    missing = compose_variables(COMPOSE_FILE.read_text()) - set(read_env_file(ENV_EXAMPLE))
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_secrets_are_required_not_defaulted(raw):
    """Passwords and keys come from .env; an unset one stops compose instead of defaulting."""
    text = COMPOSE_FILE.read_text()
    for name in ("REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "NMEM_S3_SECRET_KEY", "NMEM_API_KEYS",
                 "RAY_AUTH_TOKEN"):
        assert f"${{{name}:?" in text, f"{name} must be written ${{{name}:?...}}"
        assert f"${{{name}:-" not in text and f"${{{name}}}" not in text, name
    with pytest.raises(KeyError, match=r"set \w+ in \.env"):
        interpolate(raw, {})


def test_ray_head_and_one_worker(services):
    head, worker = services["ray-head"], services["ray-worker"]
    assert "ray start --head" in _command(head) and "--block" in _command(head)
    assert "ray start --address=ray-head:6379" in _command(worker)
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "8000:8000" in head["ports"]
    # The dashboard runs jobs: published on loopback only.
    assert "127.0.0.1:8265:8265" in head["ports"]
    assert all(not str(p).endswith(":8265") or str(p).startswith("127.0.0.1:")
               for s in services.values() for p in s.get("ports", []))


def test_ray_nodes_share_the_app_settings(services):
    head_env, worker_env = services["ray-head"]["environment"], services["ray-worker"]["environment"]
    nmem = {k: v for k, v in head_env.items() if k.startswith("NMEM_")}
    assert nmem == {k: v for k, v in worker_env.items() if k.startswith("NMEM_")}
    assert nmem["NMEM_REDIS_URL"].startswith("redis://:change-me-redis@redis:6379/")
    assert nmem["NMEM_S3_ENDPOINT"] == "http://minio:9000"
    assert nmem["NMEM_API_KEYS"]


def test_ray_token_auth_on_every_node_and_client(services):
    """Ray 2.60 token auth: the dashboard (which runs arbitrary jobs) needs the shared token."""
    for name in ("ray-head", "ray-worker", "serve-deploy"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"] == "change-me-ray-token", name
    # The client that deploys gets the token but none of the app's secrets.
    assert not any(k.startswith("NMEM_") for k in services["serve-deploy"]["environment"])


def test_redis_has_aof_and_password(services):
    redis = services["redis"]
    argv = shlex.split(redis["command"][-1])  # sh -c "exec redis-server ..."
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--requirepass") + 1] == "$REDIS_PASSWORD"  # `$$` unescaped
    assert redis["environment"]["REDIS_PASSWORD"] == "change-me-redis"
    assert "redis-data:/data" in redis["volumes"]
    assert services["ray-head"]["environment"]["RAY_REDIS_ADDRESS"] == "redis:6379"


def test_minio_bucket_created_before_ray_starts(services):
    setup = services["minio-setup"]
    assert setup["depends_on"]["minio"]["condition"] == "service_healthy"
    assert setup["restart"] == "no"
    script = (REPO / "k8s" / "minio-setup.sh")
    assert f"./k8s/{script.name}:/scripts/{script.name}:ro" in setup["volumes"]
    assert 'mc mb --ignore-existing "nmem/$NMEM_S3_BUCKET"' in script.read_text()
    head_deps = services["ray-head"]["depends_on"]
    assert head_deps["minio-setup"]["condition"] == "service_completed_successfully"


def test_serve_app_deployed_from_the_k8s_config(services):
    deploy = services["serve-deploy"]
    assert "./k8s/rayservice.yaml:/config/rayservice.yaml:ro" in deploy["volumes"]
    cmd = _command(deploy)
    assert "serveConfigV2" in cmd
    assert "serve deploy /tmp/serve-config.yaml --address http://ray-head:8265" in cmd
    assert deploy["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_named_volumes_are_declared_and_used(compose, services):
    declared = set(compose["volumes"])
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
            if not v.startswith((".", "/"))}
    assert used == declared == {"redis-data", "minio-data"}


def test_one_image_for_every_ray_role(services):
    images = {services[n]["image"] for n in ("ray-head", "ray-worker", "serve-deploy")}
    assert images == {"neural-memory-cluster:0.1.0"}
    assert all(services[n]["build"] == "." for n in ("ray-head", "ray-worker", "serve-deploy"))


@pytest.mark.parametrize("name", ["redis", "minio", "minio-setup", "ray-head", "ray-worker",
                                  "serve-deploy"])
def test_every_service_has_reservations_and_limits(services, name):
    resources = services[name]["deploy"]["resources"]
    for kind in ("reservations", "limits"):
        assert {"cpus", "memory"} <= set(resources[kind]), f"{name}: {kind}"
    assert float(resources["reservations"]["cpus"]) <= float(resources["limits"]["cpus"])


def test_every_long_running_service_has_a_healthcheck(services):
    for name in ("redis", "minio", "ray-head", "ray-worker"):
        assert services[name]["healthcheck"]["test"], name


def test_ray_start_flags_exist_in_this_ray(services):
    """Every `--flag` the compose Ray nodes pass is an option of this Ray's `ray start`."""
    from ray.scripts.scripts import start

    known = {opt for param in start.params for opt in param.opts}
    for name in ("ray-head", "ray-worker"):
        argv = shlex.split(services[name]["command"][-1].split("exec ", 1)[1])
        assert argv[:2] == ["ray", "start"], name
        flags = {arg.split("=", 1)[0] for arg in argv[2:] if arg.startswith("--")}
        assert flags <= known, f"{name}: unknown ray start flags {flags - known}"


def test_serve_deploy_command_extracts_the_k8s_config(services, tmp_path):
    """Run serve-deploy's own command here, with `serve deploy` swapped for `echo`."""
    script = services["serve-deploy"]["command"][-1]
    out = tmp_path / "serve-config.yaml"
    script = (script.replace("/config/rayservice.yaml", str(REPO / "k8s" / "rayservice.yaml"))
                    .replace("/tmp/serve-config.yaml", str(out))
                    .replace("exec serve deploy", "echo serve deploy")
                    .replace("python -c", f"{sys.executable} -c", 1))
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(out.read_text()) == serve_config()
    assert result.stdout.split() == ["serve", "deploy", str(out), "--address",
                                     "http://ray-head:8265"]
