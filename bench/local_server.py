"""A whole server inside a bench's own process, for the benches that measure over real HTTP
(serve_bench, fanout_bench): local Ray, Serve on a free port, the app with auth on (one API
key), an embedded Valkey and local checkpoints in a temp dir; all torn down at the end."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from serve.demo import wait_healthy
from serve.local import ingress_environment, resolve_ingress
from serve.ports import free_port


def local_ingress(ingress: str) -> str:
    """The ingress `local_server` runs for `ingress` ("auto" resolved: its own Ray, one gateway
    replica), for a bench to record beside its figures."""
    return resolve_ingress(ingress, None, 1)


@contextmanager
def local_server(*, tenant: str, namespace: str, gateway: dict, cluster: dict,
                 ingress: str = "auto") -> Iterator[tuple[str, str, dict]]:
    """Yields (url, API key, storage settings). `gateway`: GatewaySettings overrides; `cluster`:
    ClusterSettings overrides (the namespace and storage are set here). `ingress`: as
    `neural-memory serve --ingress` ("auto": direct, since this starts its own Ray with one
    gateway replica; set before Ray starts: its processes read it once)."""
    port = free_port()  # below the ephemeral range: Serve binds it seconds later
    import ray
    from ray import serve

    from serve.app import build_app
    from storage import EmbeddedValkey

    key = secrets.token_urlsafe(24)
    with (ingress_environment(local_ingress(ingress), port) as plan,
          tempfile.TemporaryDirectory(prefix=f"{namespace}-") as tmp):
        valkey = EmbeddedValkey(Path(tmp) / "valkey")
        redis_url = valkey.start()
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
            serve.start(http_options={"host": "127.0.0.1", "port": plan.proxy_port})
            storage = {"redis_url": redis_url, "data_dir": tmp, "s3_endpoint": None}
            app = build_app({"host": "127.0.0.1", "port": port, "api_keys": f"{key}:{tenant}", **gateway,
                             "cluster": {**cluster, "namespace": namespace, "storage": storage}})
            serve.run(app, name="neural-memory", route_prefix="/", blocking=False)
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, timeout=300)
            yield url, key, storage
        finally:
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
            valkey.stop()


async def wait_for_spares(namespace: str, count: int, timeout: float) -> None:
    """Until the supervisor holds `count` warm processes (each replacement warms in the
    background, ~3 CPU-seconds, which a measurement would otherwise include)."""
    import ray

    from cluster.supervisor import SUPERVISOR_NAME

    supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=namespace)
    deadline = time.monotonic() + timeout
    while await supervisor.spares_ready.remote() < count and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
