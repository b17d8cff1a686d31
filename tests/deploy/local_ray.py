"""A throwaway Ray cluster started the way docker-compose's head starts: `ray start --head`.

Everything it owns is under one short temp directory (Unix socket paths must stay under ~107
bytes) and on free ports, so it can run beside the test session's own Ray. `ray stop` would
stop *every* Ray on the machine (other tests', other users'), so this never calls it: it
stops its own `ray start --block` process, which shuts its node down, then kills by pid any
process still naming its temp directory on the command line.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from serve.ports import free_ports

BIN = Path(sys.executable).parent
PORT_FLAGS = (
    "--port", "--dashboard-port", "--ray-client-server-port", "--node-manager-port",
    "--object-manager-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port", "--metrics-export-port",
)


def http_get(url: str, headers: dict[str, str] | None = None,
             timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); (0, reason) when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


class LocalRayHead:
    """`ray start --head --block` in a subprocess; use as a context manager."""

    def __init__(self, env: dict[str, str], num_cpus: int = 1):
        self.root = Path(tempfile.mkdtemp(prefix="nmr-", dir="/tmp"))
        self.num_cpus = num_cpus
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NMEM_"))}
        # Token auth as in docker-compose.yml, with this cluster's own token: Ray 2.60 would
        # otherwise pick up ~/.ray/auth_token (written by any local ray.init) on its own.
        # No graceful drain on SIGTERM: nothing is routed to this throwaway cluster at the end.
        self.env.update(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", RAY_USAGE_STATS_ENABLED="0",
                        PATH=f"{BIN}:{os.environ['PATH']}")
        self.dashboard_url = ""
        self.log = self.root / "ray-start.log"
        self.proc: subprocess.Popen | None = None

    def _argv(self) -> list[str]:
        """`ray start` on fresh free ports (also sets dashboard_url)."""
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self.dashboard_url = f"http://127.0.0.1:{ports['--dashboard-port']}"
        return [str(BIN / "ray"), "start", "--head", "--block",
                "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                f"--temp-dir={self.root / 'ray'}", f"--num-cpus={self.num_cpus}",
                "--object-store-memory=100000000", "--disable-usage-stats",
                *(f"{flag}={port}" for flag, port in ports.items())]

    def __enter__(self) -> LocalRayHead:
        try:
            for attempt in range(3):
                with self.log.open("wb") as out:
                    self.proc = subprocess.Popen(self._argv(), env=self.env, stdout=out,
                                                 stderr=subprocess.STDOUT, cwd=self.root)
                if self._wait_for_dashboard(deadline=time.monotonic() + 180):
                    return self
                # Ray gives its raylet a fixed 30 s to register; on an overloaded machine it
                # can miss that. Clean up and start again rather than fail the suite.
                self._stop_processes()
            raise RuntimeError(f"ray start failed {attempt + 1} times:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_for_dashboard(self, deadline: float) -> bool:
        """True once Serve's REST API answers; False if `ray start` timed out starting up."""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "timed out during startup" in self.log.read_text(errors="replace"):
                    return False
                raise RuntimeError(f"ray start exited {self.proc.returncode}:\n{self.log_tail()}")
            # The Serve REST module answers last; `serve deploy` before that gets dropped.
            status, _ = http_get(f"{self.dashboard_url}/api/serve/applications/",
                                 headers=self.auth_header)
            if status == 200:
                return True
            time.sleep(1)
        raise TimeoutError(f"Ray dashboard never answered:\n{self.log_tail()}")

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """A command with this cluster's environment (e.g. `serve deploy`)."""
        return subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def serve_application(self, name: str) -> dict:
        """The dashboard's view of one Serve application ({} until it exists)."""
        status, body = http_get(f"{self.dashboard_url}/api/serve/applications/",
                                headers=self.auth_header)
        if status in (401, 403):  # a wrong token would otherwise look like "not yet"
            raise RuntimeError(f"dashboard refused us ({status}): {body[:500]}")
        if status != 200:
            return {}
        return json.loads(body).get("applications", {}).get(name, {})

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        logs = self.root / "ray" / "session_latest" / "logs"
        for pattern in ("dashboard.log", "dashboard_ServeHead*.log", "serve/controller_*.log",
                        "serve/replica_*.log"):
            for path in sorted(logs.glob(pattern))[-2:]:
                text += f"\n--- {path.name}\n" + path.read_text(errors="replace")[-chars:]
        return text[-3 * chars:]

    def stop(self) -> None:
        """Stop everything this cluster started, then delete its temp directory."""
        self._stop_processes()
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop_processes(self) -> None:
        """SIGTERM our `ray start --block` (it tears its node down), then kill stragglers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while (left := self.own_processes()) and time.monotonic() < deadline:
            for pid in left:
                _signal(pid, signal.SIGTERM if time.monotonic() < deadline - 10 else signal.SIGKILL)
            time.sleep(1)
        for pid in self.own_processes():
            _signal(pid, signal.SIGKILL)

    def own_processes(self) -> list[int]:
        """Pids of live processes that name this cluster's temp directory.

        Ray workers rename themselves (`ray::ServeReplica...`), so the environment, which
        they inherit from our `ray start` and which holds paths under the temp dir, is read
        as well as the command line.
        """
        marker = str(self.root).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes():
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":  # zombies are gone already, their parent reaps them
                        pids.append(int(entry.name))
            except OSError:
                continue
        return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
