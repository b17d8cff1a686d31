"""`neural-memory serve`: Ray + Serve + the app on this machine, until Ctrl-C.

With no NMEM_REDIS_URL, this process starts the embedded Valkey (AOF in
<data-dir>/valkey) itself and hands its URL to every replica, so gateway replicas and memory
actors share one metadata store and never race to start their own. Checkpoints go to
<data-dir>/checkpoints unless NMEM_S3_ENDPOINT is set. On Ctrl-C / SIGTERM the Serve app is
shut down first (the gateway's lifespan closes the cluster, which checkpoints live
memories), then Ray, then Valkey.
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP_NAME = "neural-memory"


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path | None = None
    ray_address: str | None = None
    gateway_replicas: int | None = None
    encoder_replicas: int | None = None


def _gateway_args(opts: ServeOptions) -> dict[str, Any]:
    args: dict[str, Any] = {"host": opts.host, "port": opts.port}
    if opts.gateway_replicas:
        args["gateway_replicas"] = opts.gateway_replicas
    if opts.encoder_replicas:
        args["encoder_replicas"] = opts.encoder_replicas
    return args


def start_storage(data_dir: Path | None) -> tuple[dict[str, Any], Any]:
    """Resolve storage settings; start the embedded Valkey if no Redis URL is configured.

    Returns (storage overrides for the replicas, the EmbeddedValkey to stop later or None).
    The overrides carry every NMEM_* storage variable set here, so replicas on other nodes
    (with --ray-address) use the same stores as this shell.
    """
    from storage import EmbeddedValkey, StorageSettings

    settings = StorageSettings(data_dir=data_dir) if data_dir else StorageSettings()
    overrides: dict[str, Any] = settings.model_dump(mode="json", exclude_unset=True)
    overrides["data_dir"] = str(Path(settings.data_dir).resolve())
    valkey = None
    if settings.redis_url is None:
        valkey = EmbeddedValkey(Path(overrides["data_dir"]) / "valkey")
        overrides["redis_url"] = valkey.start()
    return overrides, valkey


def _cluster_args(storage: dict[str, Any]) -> dict[str, Any]:
    """ClusterSettings set in this shell (NMEM_*), for replicas that may run elsewhere."""
    from cluster import ClusterSettings

    mine = ClusterSettings().model_dump(mode="json", exclude_unset=True,
                                        exclude={"storage", "ray_address"})
    return {**mine, "storage": storage}


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def run_server(opts: ServeOptions) -> int:
    """Start everything, print the URL, block until a signal, then stop it all in order."""
    from serve.app import build_app
    from serve.auth import Authenticator
    from serve.settings import GatewaySettings

    gateway_args = _gateway_args(opts)
    auth = Authenticator.from_settings(GatewaySettings(**gateway_args))
    auth.check_bind(opts.host, warn=False)  # fail before starting anything; build_app warns

    import ray
    from ray import serve

    storage_overrides, valkey = start_storage(opts.data_dir)
    try:
        ray.init(address=opts.ray_address or "local", include_dashboard=False,
                 logging_level="WARNING", log_to_driver=False)
        serve.start(http_options={"host": opts.host, "port": opts.port})
        app = build_app({**gateway_args, "cluster": _cluster_args(storage_overrides)})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        url = f"http://{opts.host}:{opts.port}"
        state = f"ON ({len(auth.tenants)} tenant(s))" if auth.enabled else "OFF (loopback only)"
        print(f"neural-memory serving at {url}  (REST {url}/v1, MCP {url}/mcp, docs {url}/docs)",
              flush=True)
        print(f"auth: {state}; data: {storage_overrides['data_dir']}; Ctrl-C to stop", flush=True)
        _wait_for_signal()
        print("neural-memory: shutting down", file=sys.stderr, flush=True)
        return 0
    finally:
        _shutdown(valkey)


def _shutdown(valkey: Any) -> None:
    import ray
    from ray import serve

    try:
        if ray.is_initialized():
            serve.shutdown()
    finally:
        try:
            ray.shutdown()
        finally:
            if valkey is not None:
                valkey.stop()
