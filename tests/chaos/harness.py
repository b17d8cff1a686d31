"""Chaos machinery shared by the chaos test (tests/chaos/test_chaos.py) and its benchmark
(bench/chaos_bench.py): a real `neural-memory serve` on a restartable S3 (SeaweedFS `weed`),
eight writers, faults that SIGKILL one part at a time, and the check that nothing acknowledged
was lost.

Writers observe unique short texts into four memories of two tenants (hash encoder: the test
process computes the same vectors), two writers per memory, and record every acknowledged
write as (memory, step, text). A write that failed may still have been applied (its answer was
lost), so the truth is read back from each memory's history (step, text), which lists every
applied write: every acknowledged write must be there at its step, the steps must run 1..N with
N the memory's step, and a twin (an in-process NeuralMemory fed the history's texts in step
order, same config) must end with the memory's weight_hash.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serve.ports import free_port, free_ports
from tests.fixtures.servers import (
    _WEED_PORTS,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    S3Server,
    _wait_for_s3,
    _weed_command,
    stop_process,
)
from tests.serve.server_process import Server

CONFIG = {"encoder": "hash", "memory_width": 128, "pattern_slots": 256, "value_dim": 64}
TENANTS = {"acme": "chaos-key-acme-0001", "bolt": "chaos-key-bolt-0001"}
MEMORIES = [(tenant, f"m{i}") for tenant in TENANTS for i in range(2)]
WRITERS = 8
FAULTS = ("valkey", "s3", "supervisor", "gateway", "actor", "server")
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
PAUSE_S = 0.4  # between a writer's writes: keeps each memory under the history's 1,000 items


class Weed:
    """A `weed mini` S3 server that can be SIGKILLed and started again on its ports and data."""

    def __init__(self, root: Path) -> None:
        import shutil
        import sys

        beside = Path(sys.executable).parent / "weed"
        self.binary = str(beside) if beside.exists() else shutil.which("weed")
        self.root = root
        self.ports = dict(zip(_WEED_PORTS, free_ports(len(_WEED_PORTS))))
        self.server = S3Server(f"http://127.0.0.1:{self.ports['s3.port']}", S3_ACCESS_KEY, S3_SECRET_KEY)
        self.process = None

    def start(self) -> None:
        identity = {"name": "nmem", "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
        (self.root / "s3.json").write_text(json.dumps({"identities": [identity]}))
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        log = self.root / "weed.out"
        import subprocess

        with open(log, "ab") as out:
            self.process = subprocess.Popen(_weed_command(self.binary, self.root, self.ports),
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_s3(self.server, self.process, log, timeout=120)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        return {"NMEM_S3_ENDPOINT": self.server.endpoint, "NMEM_S3_BUCKET": self.server.bucket,
                "NMEM_S3_ACCESS_KEY": S3_ACCESS_KEY, "NMEM_S3_SECRET_KEY": S3_SECRET_KEY,
                "NMEM_S3_CONNECT_TIMEOUT": "1", "NMEM_S3_MAX_ATTEMPTS": "2"}


@dataclass
class Ack:
    memory: tuple[str, str]
    step: int
    text: str
    started: float
    finished: float


@dataclass
class Ledger:
    """What the writers did: acknowledged writes and the times of failed attempts."""

    acks: list[Ack] = field(default_factory=list)
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def first_success_after(self, when: float, memory: tuple[str, str] | None = None) -> float | None:
        with self.lock:
            times = [a.finished for a in self.acks
                     if a.started >= when and (memory is None or a.memory == memory)]
        return min(times) if times else None


class Writers:
    """WRITERS threads, two per memory, each observing unique texts until stopped."""

    def __init__(self, url: str, ledger: Ledger) -> None:
        self.url, self.ledger = url, ledger
        self._stop = threading.Event()
        self._go = threading.Event()  # cleared while the memories are being checked
        self._go.set()
        self._busy = threading.Semaphore(WRITERS)  # one permit per writer, held while writing
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(WRITERS)]

    def pause(self) -> None:
        """Let the writes in flight finish and start no new ones."""
        self._go.clear()
        for _ in range(WRITERS):
            self._busy.acquire()

    def resume(self) -> None:
        for _ in range(WRITERS):
            self._busy.release()
        self._go.set()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _run(self, index: int) -> None:
        tenant, name = MEMORIES[index % len(MEMORIES)]
        rng = random.Random(index)
        words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
        headers = {"Authorization": f"Bearer {TENANTS[tenant]}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT) as client:
            seq = 0
            while not self._stop.is_set():
                if not self._go.wait(0.2):
                    continue
                seq += 1
                text = f"w{index} n{seq} " + " ".join(rng.choice(words) for _ in range(4))
                started = time.monotonic()
                with self._busy:
                    try:
                        response = client.post(f"/v1/memories/{name}/observe", json={"context": text})
                    except httpx.HTTPError:
                        response = None
                if response is not None and response.status_code == 200:
                    with self.ledger.lock:
                        self.ledger.acks.append(Ack((tenant, name), response.json()["step"], text,
                                                    started, time.monotonic()))
                    self._stop.wait(PAUSE_S)
                else:
                    with self.ledger.lock:
                        self.ledger.failures += 1
                    self._stop.wait(0.2)


def descendants(root: int) -> dict[int, str]:
    """{pid: command line} of every process below `root`."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = {}, {root}
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found.update({pid: commands.get(pid, "") for pid in children})
        frontier = children
    return found


def kill_titled(server: Server, title: str, *, every: bool = False) -> int:
    """SIGKILL the server's process(es) whose title starts with `title`; how many."""
    pids = [pid for pid, cmd in descendants(server.process.pid).items() if cmd.startswith(title)]
    assert pids, f"no {title} process under the server"
    for pid in pids if every else pids[:1]:
        os.kill(pid, signal.SIGKILL)
    return len(pids) if every else 1


class Chaos:
    """The server, its S3, the writers and the faults (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.weed = Weed(root / "weed")
        self.ledger = Ledger()
        self.server: Server | None = None
        self.writers: Writers | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.weed.root.mkdir(parents=True, exist_ok=True)
        self.weed.start()
        self._start_server()
        for tenant, name in MEMORIES:
            response = self.client(tenant).post("/v1/memories", json={"name": name, "config": CONFIG})
            assert response.status_code == 201, response.text
        self.writers = Writers(self.server.url, self.ledger)
        self.writers.start()

    def _start_server(self) -> None:
        env = {"NMEM_API_KEYS": ",".join(f"{k}:{t}" for t, k in TENANTS.items()),
               "NMEM_GATEWAY_REPLICAS": "2", "NMEM_PRELOAD_ENCODERS": "hash",
               "NMEM_CHECKPOINT_EVERY_WRITES": "25", **self.weed.env()}
        self.server = Server(self.root / "data", self.port, self.root / "serve.log", env)
        self.server.wait_ready()

    def stop(self) -> None:
        if self.writers is not None:
            self.writers.stop()
        if self.server is not None:
            self.server.stop()
        self.weed.stop()

    def client(self, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {TENANTS[tenant]}"},
                            timeout=TIMEOUT)

    # ---- faults --------------------------------------------------------------------------
    def inject(self, fault: str) -> dict:
        """SIGKILL one part; returns {fault, killed_at, recovered_s (writes succeed again)}."""
        time.sleep(2.0)  # writes flowing before the fault
        getattr(self, f"_kill_{fault}")()
        killed_at = self._killed_at
        if fault == "server":
            self._restart_server()
        first = self._wait_for(lambda: self.ledger.first_success_after(killed_at))
        every = self._wait_for(lambda: max_or_none(
            self.ledger.first_success_after(killed_at, memory) for memory in MEMORIES))
        time.sleep(2.0)  # writes flowing after the recovery
        return {"fault": fault, "writes_ok_after_s": round(first - killed_at, 2),
                "every_memory_ok_after_s": round(every - killed_at, 2)}

    def _mark(self) -> None:
        self._killed_at = time.monotonic()

    def _kill_valkey(self) -> None:
        pid = int((self.root / "data" / "valkey" / "valkey.pid").read_text())
        self._mark()
        os.kill(pid, signal.SIGKILL)

    def _kill_s3(self) -> None:
        """SIGKILL S3 while a checkpoint is being written; S3 is not ours to heal: start it again."""
        tenant, name = MEMORIES[0]
        outcome = {}
        checkpoint = threading.Thread(target=lambda: outcome.update(
            status=self.client(tenant).post(f"/v1/memories/{name}/checkpoints",
                                            json={"tag": f"chaos-{time.time_ns()}"}).status_code))
        checkpoint.start()
        time.sleep(0.05)
        self._mark()
        self.weed.kill()
        checkpoint.join(120)
        assert outcome.get("status") in (200, 503), outcome  # saved before the kill, or a clean 503
        time.sleep(1.0)
        self.weed.start()

    def _kill_supervisor(self) -> None:
        self._mark()
        kill_titled(self.server, "ray::Supervisor")

    def _kill_gateway(self) -> None:
        self._mark()
        kill_titled(self.server, "ray::ServeReplica:neural-memory:Gateway")

    def _kill_actor(self) -> None:
        self._mark()
        kill_titled(self.server, "ray::MemoryActor", every=True)

    def _kill_server(self) -> None:
        group = self.server.process.pid
        below = descendants(group)
        self._mark()
        os.killpg(group, signal.SIGKILL)
        for pid in below:  # Ray processes that left the process group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.server.process.wait(30)

    def _restart_server(self) -> None:
        self._start_server()
        self.writers.url = self.server.url

    @staticmethod
    def _wait_for(probe, timeout: float = 300.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value is not None:
                return value
            time.sleep(0.1)
        raise AssertionError(f"writes did not succeed again within {timeout:.0f} s")

    # ---- the check -----------------------------------------------------------------------
    def verify(self) -> dict:
        """For every memory: acknowledged writes present at their steps, steps 1..N, and the
        weight_hash of a twin fed the history. Returns {"acknowledged", "lost", "mismatched"}."""
        with self.ledger.lock:
            acks = list(self.ledger.acks)
        by_memory = defaultdict(list)
        for ack in acks:
            by_memory[ack.memory].append(ack)
        lost, mismatched = [], []
        for tenant, name in MEMORIES:
            with self.client(tenant) as client:
                stats = client.get(f"/v1/memories/{name}/stats").json()
                history = client.get(f"/v1/memories/{name}/history", params={"limit": 1000}).json()
            applied = {item["step"]: item["text"] for item in history["observations"]}
            mine, total = by_memory[(tenant, name)], stats["total_observations"]
            # A write acknowledged while Redis was failing may lack its history item (the
            # history is written after the write is durable); its text is known from the ack.
            lost += [a for a in mine if a.step > total or applied.setdefault(a.step, a.text) != a.text]
            steps = list(range(1, total + 1))
            assert sorted(applied) == steps, (f"{tenant}/{name}", stats, sorted(set(steps) ^ set(applied)))
            if twin_hash([applied[s] for s in steps]) != stats["weight_hash"]:
                mismatched.append(f"{tenant}/{name}")
        return {"acknowledged": len(acks), "lost": len(lost), "mismatched": mismatched,
                "lost_examples": [(a.memory, a.step, a.text) for a in lost[:5]]}


def max_or_none(values) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else max(values)


def twin_hash(texts: list[str]) -> str:
    """weight_hash of a fresh memory (CONFIG) fed `texts` one by one, as the actor does."""
    import torch

    from memory import MemoryConfig, NeuralMemory, get_encoder

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors' arithmetic
    try:
        memory = NeuralMemory(MemoryConfig.from_dict(CONFIG))
        vectors = get_encoder("hash").encode(texts) if texts else []
        for i, text in enumerate(texts):
            memory.observe_vectors(vectors[i : i + 1], [text])
        return memory.weight_hash
    finally:
        torch.set_num_threads(before)


def run_all(root: Path, faults: tuple[str, ...] = FAULTS) -> list[dict]:
    """Start, inject each fault in turn and verify after each; the records, one per fault."""
    chaos = Chaos(root)
    records = []
    try:
        chaos.start()
        for fault in faults:
            record = chaos.inject(fault)
            chaos.writers.pause()
            try:
                record.update(chaos.verify())
            finally:
                chaos.writers.resume()
            records.append(record)
    finally:
        chaos.stop()
    return records
