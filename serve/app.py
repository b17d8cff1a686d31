"""The Serve application builder, `serve.app:build_app`.

Usable by `serve run serve.app:build_app key=value ...`, by a `serve deploy` / KubeRay
`RayService` config (`import_path: serve.app:build_app`, `args: {...}`), and by
`neural-memory serve`. `args` override NMEM_* environment variables:

- any GatewaySettings field (host, port, api_keys, api_keys_file, default_memory,
  max_body_bytes, gateway_replicas, encoder_replicas, preload_encoders, ...);
- `cluster`: a dict of ClusterSettings overrides, passed to every gateway replica.

Refuses to build when auth is off and `host` is not loopback.
"""

from __future__ import annotations

import json
from typing import Any

from ray.serve import Application

from serve.auth import Authenticator
from serve.encoder import Encoder
from serve.gateway import Gateway
from serve.settings import GatewaySettings


def _split_args(args: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    args = dict(args or {})
    cluster = args.pop("cluster", None) or {}
    if isinstance(cluster, str):  # `serve run ... cluster='{"namespace": "x"}'`
        cluster = json.loads(cluster)
    if not isinstance(cluster, dict):
        raise TypeError("build_app: `cluster` must be a dict of ClusterSettings overrides")
    unknown = set(args) - set(GatewaySettings.model_fields)
    if unknown:
        raise TypeError(
            f"build_app: unknown args {sorted(unknown)}; allowed: "
            f"{sorted(GatewaySettings.model_fields)} and 'cluster'"
        )
    return args, cluster


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Gateway (+ the Encoder deployment when encode_in="deployment"), bound.
    Validates settings and auth here, on the driver, to fail fast."""
    gateway_args, cluster_args = _split_args(args)
    settings = GatewaySettings(**gateway_args)
    auth = Authenticator.from_settings(settings)
    auth.check_bind(settings.host)
    # Replicas get resolved values, so every replica sees the same configuration whatever the
    # environment of its node; keys travel only as sha256 digests, never in the clear.
    resolved = settings.model_dump(mode="json", exclude={"api_keys", "api_keys_file"})
    encoder = None  # encode_in="gateway": each gateway replica holds the model itself
    if settings.encode_in == "deployment":
        encoder = Encoder.options(
            num_replicas=settings.encoder_replicas,
            ray_actor_options={"num_cpus": settings.encoder_num_cpus},
        ).bind(
            preload=settings.encoders_to_preload(),
            batch_size=settings.encoder_batch_size,
            batch_wait_s=settings.encoder_batch_wait_s,
        )
    return Gateway.options(
        num_replicas=settings.gateway_replicas,
        ray_actor_options={"num_cpus": settings.gateway_num_cpus},
    ).bind(encoder, resolved, auth.digests(), cluster_args)
