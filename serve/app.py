"""The Serve application builder, `serve.app:build_app`, and the settings it starts from.

Usable by `serve run serve.app:build_app key=value ...`, by a `serve deploy` / KubeRay
`RayService` config (`import_path: serve.app:build_app`, `args: {...}`), and by
`neural-memory serve`. This is the entry point that reads NMEM_* (once, in `read_settings`):
`args` override the environment with

- any GatewaySettings field (host, port, api_keys, api_keys_file, default_memory,
  max_body_bytes, gateway_replicas, encoder_replicas, preload_encoders, ...);
- `cluster`: a dict of ClusterSettings overrides (its `storage` and `actor` parts as dicts).

The resulting objects are handed to the replicas as they are, so every replica runs with the
configuration of the process that built the app, whatever the environment of its node.
Refuses to build when auth is off and `host` is not loopback.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from ray.serve import Application

from cluster import ClusterSettings
from errors import InvalidInput
from serve.auth import Authenticator
from serve.encoder import Encoder, check_preload
from serve.gateway import Gateway
from serve.settings import GatewaySettings, settings_problems, unread_variable_warnings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppSettings:
    """Everything the Serve app needs: the gateway's part and the control plane's part."""

    gateway: GatewaySettings
    cluster: ClusterSettings


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


def read_settings(args: dict[str, Any] | None = None) -> AppSettings:
    """NMEM_* from this process's environment, with `args` on top (see the module docstring)."""
    gateway_args, cluster_args = _split_args(args)
    try:
        settings = AppSettings(gateway=GatewaySettings(**gateway_args), cluster=ClusterSettings(**cluster_args))
    except ValidationError as exc:
        raise InvalidInput(f"bad settings: {settings_problems(exc)}") from None
    check_preload(settings.gateway.encoders_to_preload())  # before a deploy whose replicas would fail on it
    return settings


def setting_variables() -> set[str]:
    """Every NMEM_* variable a server setting reads: the gateway's and the cluster's, with the
    storage and actor settings inside the cluster's."""
    models = [GatewaySettings, ClusterSettings,
              *(ClusterSettings.model_fields[part].annotation for part in ("storage", "actor"))]
    return {f"NMEM_{name.upper()}" for model in models for name in model.model_fields}


def build_application(settings: AppSettings) -> Application:
    """Gateway (+ the Encoder deployment when encode_in="deployment"), bound to `settings`.
    Validates auth here, on the driver, to fail fast, and warns of NMEM_* variables no
    setting reads."""
    for warning in unread_variable_warnings(os.environ, setting_variables()):
        logger.warning(warning)
    gateway = settings.gateway
    auth = Authenticator.from_settings(gateway)
    auth.check_bind(gateway.host)
    # Keys (tenants' and the metrics key) travel to the replicas only as sha256 digests.
    public = gateway.model_copy(update={"api_keys": None, "api_keys_file": None, "metrics_key": None})
    encoder = None  # encode_in="gateway": each gateway replica holds the model itself
    if gateway.encode_in == "deployment":
        encoder = Encoder.options(
            num_replicas=gateway.encoder_replicas,
            ray_actor_options={"num_cpus": gateway.encoder_num_cpus},
        ).bind(
            preload=gateway.encoders_to_preload(),
            batch_size=gateway.encoder_batch_size,
            batch_wait_s=gateway.encoder_batch_wait_s,
            cache_dir=gateway.encoder_cache_dir,
        )
    return Gateway.options(
        num_replicas=gateway.gateway_replicas,
        ray_actor_options={"num_cpus": gateway.gateway_num_cpus},
    ).bind(encoder, public, auth.digests(), settings.cluster, auth.metrics_digest)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The entry point Serve configs name: read the settings, then build."""
    return build_application(read_settings(args))
