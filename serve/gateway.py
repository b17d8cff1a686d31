"""The Gateway deployment: the FastAPI ingress of the Serve application.

`@serve.ingress()` without an app plus `__serve_build_asgi_app__` means the FastAPI app is
built inside each replica (after `__init__`), so nothing unpicklable ever crosses to Ray.
The Encoder deployment arrives as a DeploymentHandle, or as None when the gateway encodes
in-process (`encode_in="gateway"`); the MemoryCluster is created in the app's lifespan from
the ClusterSettings the builder passed in.
"""

from __future__ import annotations

import logging

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster import ClusterSettings, MemoryCluster
from serve.auth import Authenticator
from serve.encode_batcher import EncodeBatcher
from serve.encoder import LocalEncoder
from serve.http_app import GatewayRuntime, create_api
from serve.metrics import GatewayMetrics
from serve.ports import reset_connections_on_close
from serve.settings import GATEWAY_REQUEST_SLOTS, GatewaySettings

logger = logging.getLogger(__name__)


# The packages whose loggers a gateway replica runs (serve/, and the control plane it holds).
OUR_LOGGERS = ("serve", "cluster", "storage", "errors")


def _log_where_serve_logs() -> None:
    """Our loggers write where Serve's own does in this replica: its log file under Ray's session
    logs (`logs/serve/replica_*Gateway*.log`), with the request's context. Left to propagate to
    the root logger, which a Ray worker leaves without a handler, every line of theirs was lost,
    a 5xx's details under its request id included."""
    serve_logger = logging.getLogger("ray.serve")
    for name in OUR_LOGGERS:
        ours = logging.getLogger(name)
        for handler in serve_logger.handlers:
            if handler not in ours.handlers:
                ours.addHandler(handler)
        ours.propagate = False
        if ours.level == logging.NOTSET:
            ours.setLevel(logging.INFO)


@serve.deployment(name="Gateway", max_ongoing_requests=GATEWAY_REQUEST_SLOTS, health_check_period_s=10)
@serve.ingress()
class Gateway:
    def __init__(
        self,
        encoder: DeploymentHandle | None,
        settings: GatewaySettings,
        auth_digests: dict[str, str],
        cluster_settings: ClusterSettings,
        metrics_digest: str | None = None,
    ) -> None:
        _log_where_serve_logs()
        # Both settings objects were read once by the app's builder; nothing here reads NMEM_*.
        self._settings = settings
        self._auth = Authenticator(dict(auth_digests), metrics_digest)
        self._auth.check_bind(self._settings.host)  # warns in the replica log too
        # No Encoder deployment bound (encode_in="gateway"): the model lives in this replica.
        self._encoder = encoder
        self._local = None
        if encoder is None:
            self._local = LocalEncoder(self._settings.encoders_to_preload(), self._settings.encoder_threads,
                                       self._settings.encoder_cache_dir)
        # In-process passes queue in one thread: one in flight lets the next batch fill meanwhile.
        self._batcher = EncodeBatcher(self._encode_batch, max_batch=self._settings.encoder_batch_size,
                                      max_in_flight=2 if encoder is not None else 1)
        self._cluster_settings = cluster_settings
        self._app: FastAPI | None = None

    async def _encode_batch(self, encoder: str, texts: list[str]) -> np.ndarray:
        if self._local is not None:
            return await self._local.encode_batch(encoder, texts)
        return await self._encoder.encode_batch.remote(encoder, texts)

    def __serve_build_asgi_app__(self) -> FastAPI:
        runtime = GatewayRuntime(
            settings=self._settings,
            auth=self._auth,
            make_cluster=lambda: MemoryCluster(self._cluster_settings),
            encode=self._batcher.encode_many,
            metrics=GatewayMetrics(),
        )
        self._app = create_api(runtime)
        return self._app

    def reset_connections_on_close(self) -> int:
        """Before a stop: this replica's HTTP connections end with a reset, not a FIN (see
        serve.ports.reset_connections_on_close), so a restart can bind the port at once."""
        return reset_connections_on_close(self._settings.port)

    def check_health(self) -> None:
        """Serve replaces the replica if this raises (e.g. the lifespan never finished)."""
        if self._app is not None and not getattr(self._app.state, "ready", True):
            raise RuntimeError("gateway lifespan is not running")
