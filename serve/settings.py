"""Gateway settings: pydantic-settings with the NMEM_ prefix, read when built, never at import.

`build_app(args)` merges its `args` over the environment, so `serve run`, `serve deploy`, a
KubeRay `RayService` and `neural-memory serve` all configure the gateway the same way.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import contract
from serve.schemas import MEMORY_NAME_PATTERN

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
Ingress = Literal["auto", "direct", "proxy", "haproxy"]  # how HTTP reaches the gateway (`ingress` below)
INGRESS_MODES: tuple[str, ...] = get_args(Ingress)
GATEWAY_REQUEST_SLOTS = 200  # requests one gateway replica serves at once (Serve's max_ongoing_requests)


# NMEM_* variables that the command-line tools and the Python client read, not the server.
TOOL_VARIABLES = frozenset({"NMEM_URL", "NMEM_API_KEY", "NMEM_IMPORT_JOURNAL_DIR", "NMEM_REGISTRY_USERNAME",
                            "NMEM_REGISTRY_PASSWORD"})


def unread_variable_warnings(environ: Mapping[str, str], settings: set[str]) -> list[str]:
    """A warning for each NMEM_* variable in `environ` that neither a server setting (names in
    `settings`) nor a tool reads: a misspelt setting is otherwise dropped without a word. Also
    for NMEM_API_KEY on a server without keys: it is what clients send, not the server's keys."""
    warnings = []
    for name in sorted(n for n in environ if n.upper().startswith("NMEM_")):
        if name.upper() in settings or name in TOOL_VARIABLES:
            continue
        close = difflib.get_close_matches(name.upper(), sorted(settings), n=1)
        warnings.append(f"{name} is not a setting of this server and is ignored"
                        + (f"; did you mean {close[0]}?" if close else ""))
    if environ.get("NMEM_API_KEY") and not (environ.get("NMEM_API_KEYS") or environ.get("NMEM_API_KEYS_FILE")):
        warnings.append('NMEM_API_KEY is the key a client sends; the server\'s keys are NMEM_API_KEYS '
                        '("key:tenant,...") or NMEM_API_KEYS_FILE, and neither is set: auth is off')
    return warnings


def settings_problems(exc: ValidationError) -> str:
    """What to fix in NMEM_* settings pydantic refused, naming each variable, never its value
    (a refused value may be a key or a secret, and this message reaches logs)."""
    return "; ".join(f"NMEM_{str(error['loc'][-1]).upper() if error['loc'] else '?'}: {error['msg']}"
                     for error in exc.errors(include_input=False, include_url=False))


def is_loopback(host: str) -> bool:
    """True when `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class GatewaySettings(BaseSettings):
    """What the Serve gateway needs; every field can be set as NMEM_<FIELD> or a build_app arg."""

    model_config = SettingsConfigDict(env_prefix="NMEM_", extra="ignore", allow_inf_nan=False)

    host: str = Field(
        "127.0.0.1",
        description="Address the server's HTTP port binds (NMEM_INGRESS says who holds it). Auth may be off "
                    "only when this is loopback.",
    )
    port: int = Field(8000, ge=1, le=65535, description="The server's HTTP port (held by the gateway replica "
                                                         "itself with the default ingress, else by Serve's proxy).")
    api_keys: str | None = Field(
        None, description='API keys as "key:tenant" pairs, comma-separated. Empty = auth off.'
    )
    api_keys_file: Path | None = Field(
        None, description='File with one "key:tenant" pair per line (# comments allowed).'
    )
    default_memory: str = Field(
        "default",
        pattern=MEMORY_NAME_PATTERN,
        description="Memory used by MCP tools called without `memory`; created on first use.",
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body accepted (413 above it)."
    )
    body_stall_seconds: float = Field(
        30.0, gt=0, description="A request whose body brings less than 1 KiB in this many seconds (stopped or "
                                "trickling) is refused with 408 (a stalled client would otherwise hold a gateway "
                                "request slot for as long as it liked).",
    )
    max_image_bytes: int = Field(
        512 * 1024 * 1024, ge=1024,
        description="Largest memory image accepted by PUT /v1/memories/{name}/image (413 above it).",
    )
    metrics_public: bool = Field(
        False, description="Serve /metrics without any key (for an in-cluster scraper)."
    )
    metrics_key: str | None = Field(
        None, min_length=16, repr=False,
        description="Operator key for /metrics (Authorization: Bearer <key>), at least 16 characters. The metrics are "
                    "server-wide, so tenant keys are refused; with auth on and neither this nor "
                    "NMEM_METRICS_PUBLIC, /metrics is closed.",
    )
    # Above what one replica serves on a small machine (~50-250 single observes/s on 2 cores),
    # so an agent's own ingest is not throttled; it stops floods, not heavy honest use.
    rate_limit_per_second: float = Field(
        200.0, ge=0,
        description="Requests per second one API key may make to /v1 and /mcp, on average, per "
                    "gateway replica (429 with Retry-After above it). 0 turns the limit off.",
    )
    rate_limit_burst: int = Field(
        400, ge=1, description="Requests one API key may make at once before the rate applies."
    )
    max_in_flight_per_key: int = Field(
        GATEWAY_REQUEST_SLOTS // 2, ge=0,
        description=f"Requests one API key may have under way at once, per gateway replica (429 with "
                    f"Retry-After above it), so one client cannot hold all {GATEWAY_REQUEST_SLOTS} of a "
                    f"replica's request slots (say, with slow uploads). 0 turns the cap off.",
    )
    encoder_cache_seconds: float = Field(
        60.0, ge=0, description="How long the gateway trusts a cached memory -> encoder lookup."
    )
    preload_encoders: str = Field(
        "minilm", description="Comma-separated encoders loaded at start (where encoding runs)."
    )
    encode_in: Literal["gateway", "deployment"] = Field(
        "gateway",
        description=(
            "Where text becomes vectors: `gateway`, in each gateway replica (no extra hop: lower "
            "latency and CPU per request; one model copy per gateway replica), or `deployment`, in "
            "the separate Encoder deployment (scales apart from the gateways, one model per encoder "
            "replica)."
        ),
    )
    encoder_threads: int = Field(
        0, ge=0, le=64,
        description="Intra-op threads (torch and the ONNX Runtime encoder session) for "
                    "in-gateway encoding; 0 keeps Ray's default (1 for a replica reserving < 1 CPU).",
    )
    encoder_cache_dir: Path | None = Field(
        None, description="Where MiniLM's ONNX export is cached (built on first use, or by `python "
                          "-m memory.encoder_export --cache-dir DIR`); unset: ~/.cache/neural-memory/encoders.")
    encoder_batch_size: int = Field(32, ge=1, le=1024, description="Max texts per encoder batch.")
    encoder_batch_wait_s: float = Field(
        0.002, ge=0, le=1, description="How long the encoder waits to fill a batch."
    )
    ingress: Ingress = Field(
        "auto",
        description="Who holds the HTTP port when `neural-memory serve` starts its own Ray: `direct`, "
                    "the one gateway replica itself (Serve's direct ingress: no hop before the app; "
                    "the fastest on one machine); `proxy`, Ray Serve's Python proxy actor; `haproxy`, "
                    "Ray's HAProxy ingress in Serve's throughput-optimized mode (for several gateway "
                    "replicas). `auto`: direct when this command starts its own Ray with one gateway "
                    "replica, else proxy (README: 'Ingress'). On a Ray cluster this command does "
                    "not start, set RAY_SERVE_ENABLE_HA_PROXY=1 and RAY_SERVE_THROUGHPUT_OPTIMIZED=1 "
                    "in the cluster's environment for HAProxy.",
    )
    gateway_replicas: int = Field(1, ge=1, le=64, description="Gateway (FastAPI) replicas.")
    encoder_replicas: int = Field(1, ge=1, le=64, description="Encoder replicas.")
    gateway_num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per gateway replica.")
    encoder_num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per encoder replica.")
    ui_dir: Path | None = Field(
        None, description="Dashboard folder; defaults to serve/ui next to this module."
    )

    # NMEM_API_KEYS_FILE= (set but empty) means "not set", not the current directory.
    _blank_is_unset = field_validator("api_keys", "api_keys_file", "ui_dir", "encoder_cache_dir",
                                      "metrics_key",
                                      mode="before")(
        contract.blank_as_unset)

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("host must not be empty; use 127.0.0.1 for local use")
        return value.strip()

    def encoders_to_preload(self) -> list[str]:
        return [name.strip() for name in self.preload_encoders.split(",") if name.strip()]

    def resolved_ui_dir(self) -> Path:
        return self.ui_dir if self.ui_dir is not None else Path(__file__).parent / "ui"


# ---- the README's settings table, generated from the models (a test keeps the two equal) ------

SETTINGS_TABLE_START = "<!-- settings-table:start (generated: python -m serve.settings) -->"
SETTINGS_TABLE_END = "<!-- settings-table:end -->"
_SECRET_FIELDS = {"api_keys", "s3_secret_key", "metrics_key"}


def _shown_default(name: str, field) -> str:
    if name in _SECRET_FIELDS:
        return "unset"
    value = field.get_default(call_default_factory=True)
    return "unset" if value is None else f"`{value}`"


def settings_table() -> str:
    """Every NMEM_* setting of the server (gateway, control plane, storage, memory actors) as a
    Markdown table: variable, default, meaning — from the pydantic models' descriptions."""
    from cluster import ClusterSettings  # noqa: PLC0415 - only the doc generator needs it

    nested = {name: ClusterSettings.model_fields[name].annotation for name in ("storage", "actor")}
    models = [("gateway", GatewaySettings), ("cluster", ClusterSettings),
              ("storage", nested["storage"]), ("actor", nested["actor"])]
    rows = ["| variable | part | default | meaning |", "|---|---|---|---|"]
    for part, model in models:
        for name, field in model.model_fields.items():
            if model is ClusterSettings and name in nested:
                continue
            meaning = " ".join((field.description or "").split()).replace("|", "\\|")
            rows.append(f"| `NMEM_{name.upper()}` | {part} | {_shown_default(name, field)} | {meaning} |")
    return "\n".join([SETTINGS_TABLE_START, *rows, SETTINGS_TABLE_END])


if __name__ == "__main__":
    print(settings_table())
