"""`neural-memory demo`: the spec's three demo scenarios (seeds/SPEC.md §6), told with numbers.

1. Teaching a new concept: infer and surprise before, observe the same concept a few times,
   then infer and surprise after; the weight hash before and after.
2. Pattern recognition: three examples of one coding pattern make a *related* question less
   surprising, while an unrelated control stays surprising.
3. Checkpoint -> experiment -> restore -> fork: the restored weights are bit-identical to the
   checkpoint, and the fork starts from exactly those weights.

It talks to the server only through the Python client (`neural_memory`), like any user. Without
--url it starts its own server (`neural-memory serve`) on a free port with a temporary data
directory, restarts it once to show the memory persists, and stops it at the end. It writes a
PNG of the surprise curve and exits non-zero, with the reason, if any claim does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from errors import NeuralMemoryError, Unavailable
from neural_memory import AsyncClient

CONCEPT = ("Grokking is when a model suddenly generalizes after extensive overfitting. "
           "It was discovered by OpenAI in 2022 and shows delayed generalization.")
QUESTION = "What is grokking in ML?"
REPEATS = 4  # how often the concept is shown; surprise should fall by >90% over these
PATTERN = ["In Python, use `with open()` for file handling",
           "Always use context managers for resources in Python",
           "The `with` statement ensures cleanup in Python"]
RELATED = "Should I use with statement for database connections?"
UNRELATED = "The Eiffel Tower was finished in 1889 for the World's Fair in Paris."
PATTERN_QUESTION = "How should I handle file resources?"
EXPERIMENT = ["Experiment: replace every context manager with manual try/finally blocks",
              "Experiment: keep open file handles in global variables for speed"]
REQUEST_TIMEOUT_S = 120.0  # a first call may start an actor and warm the encoder
STARTUP_TIMEOUT_S = 240.0  # Ray + Serve + encoder on a busy 2-core machine
STOP_TIMEOUT_S = 60.0


@dataclass
class Curve:
    """Every observation the demo made, in order, for the PNG."""

    labels: list[str] = field(default_factory=list)
    surprises: list[float] = field(default_factory=list)
    concept: list[float] = field(default_factory=list)  # the repeated concept, then the check

    def add(self, label: str, surprise: float) -> None:
        self.labels.append(label)
        self.surprises.append(surprise)


def say(text: str = "") -> None:
    print(text, flush=True)


def short(weight_hash: str | None) -> str:
    return (weight_hash or "?")[:6]


def clip(text: str, n: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def check(ok: bool, claim: str) -> None:
    """A claim the demo prints must hold; otherwise the demo fails with that claim."""
    if not ok:
        raise NeuralMemoryError(f"demo claim did not hold: {claim}")


async def surprise(b: AsyncClient, mem: str, text: str) -> float:
    return float((await b.surprise(mem, text)).score)


async def weight_hash(b: AsyncClient, mem: str) -> str:
    return (await b.stats(mem)).weight_hash


# ---- the three scenarios -------------------------------------------------------------------

async def teach_concept(b: AsyncClient, mem: str, curve: Curve, config: dict | None) -> str:
    say("\n1. Teaching a new concept (SPEC 6.1)")
    created = await b.create_memory(mem, config)
    say(f"   created memory '{mem}': {created.weight_parameters:,} weight parameters, "
        f"weights {short(created.weight_hash)}")
    before = await b.infer(mem, QUESTION)
    say(f"   ask \"{QUESTION}\" before teaching -> confidence {before.confidence:.2f}: "
        f"\"{clip(before.response, 60) or '(nothing learned yet)'}\"")
    say(f"   surprise of the concept before teaching: {await surprise(b, mem, CONCEPT):.3f}")
    say(f"   teach it: \"{clip(CONCEPT)}\"")
    previous = await weight_hash(b, mem)
    for i in range(1, REPEATS + 1):
        r = await b.observe(mem, CONCEPT, domain="ml")
        curve.add(f"concept #{i}", r.surprise)
        curve.concept.append(float(r.surprise))
        say(f"   observe #{i}: surprise {r.surprise:.3f}   weights changed: "
            f"{short(previous)} → {short(r.weight_hash)}")
        check(r.weight_hash != previous, f"observe #{i} changed the weights")
        previous = r.weight_hash
    final = await surprise(b, mem, CONCEPT)
    curve.concept.append(final)
    first = curve.concept[0]
    fall = 1 - final / first if first > 0 else 0.0
    say(f"   Result: the repeated concept's surprise fell {first:.3f} → {final:.3f} (-{fall:.0%})")
    check(final < first, "surprise of the repeated concept fell")
    after = await b.infer(mem, QUESTION)
    say(f"   ask again -> confidence {before.confidence:.2f} → {after.confidence:.2f}: "
        f"\"{clip(after.response, 90)}\"")
    params = (await b.stats(mem)).weight_parameters
    say(f"   weights before teaching {short(created.weight_hash)}, after {short(previous)}; "
        f"still {params:,} parameters")
    check(params == created.weight_parameters, "learning does not grow the parameter count")
    return previous


async def after_restart(b: AsyncClient, mem: str, taught_hash: str) -> None:
    say("   Session 2: the server was stopped and started again")
    weights = await weight_hash(b, mem)
    say(f"   weights after restart {short(weights)} (before: {short(taught_hash)})")
    check(weights == taught_hash, "the learned weights survive a restart")
    answer = await b.infer(mem, "Explain grokking")
    say(f"   \"Explain grokking\" -> confidence {answer.confidence:.2f}: "
        f"\"{clip(answer.response, 90)}\"")
    say(f"   surprise of the concept now: {await surprise(b, mem, CONCEPT):.3f} "
        "(it already knows this)")


async def recognise_pattern(b: AsyncClient, mem: str, curve: Curve, config: dict | None) -> None:
    say("\n2. Pattern recognition (SPEC 6.2)")
    await b.create_memory(mem, config)
    related0, control0 = await surprise(b, mem, RELATED), await surprise(b, mem, UNRELATED)
    for i, text in enumerate(PATTERN, 1):
        r = await b.observe(mem, text, domain="python")
        curve.add(f"pattern #{i}", r.surprise)
        say(f"   observe \"{text}\": surprise {r.surprise:.3f}")
    related1, control1 = await surprise(b, mem, RELATED), await surprise(b, mem, UNRELATED)
    say(f"   new related question \"{RELATED}\": surprise {related0:.3f} → {related1:.3f}")
    say(f"   unrelated control \"{clip(UNRELATED, 50)}\": surprise {control0:.3f} → {control1:.3f}")
    verdict = ("is less surprised by the related question" if related1 < control1
               else "does not yet tell the related question from the unrelated one")
    say(f"   the memory {verdict} ({related1:.3f} vs {control1:.3f})")
    answer = await b.infer(mem, PATTERN_QUESTION)
    say(f"   ask \"{PATTERN_QUESTION}\" -> confidence {answer.confidence:.2f}: "
        f"\"{clip(answer.response, 80)}\"")
    for top in answer.attention_weights[:1]:
        say(f"   it attended most to \"{clip(top.pattern, 60)}\" (weight {top.weight:.2f})")


async def checkpoint_restore_fork(b: AsyncClient, mem: str, curve: Curve) -> None:
    say("\n3. Checkpoint → experiment → restore → fork (SPEC 6.3)")
    cp = await b.checkpoint(mem, "stable-v1", "before the experiment")
    stable = cp.weight_hash
    say(f"   checkpoint 'stable-v1': weights {short(stable)}, {cp.size_mb:.2f} MB")
    for text in EXPERIMENT:
        r = await b.observe(mem, text, domain="python")
        curve.add("experiment", r.surprise)
        say(f"   experiment \"{clip(text, 50)}\": surprise {r.surprise:.3f}, "
            f"weights now {short(r.weight_hash)}")
    check(await weight_hash(b, mem) != stable, "the experiment changed the weights")
    restored = await b.restore(mem, "stable-v1")
    say(f"   restore 'stable-v1': weights {short(restored.weight_hash)}, "
        f"{restored.learning_since_checkpoint} step(s) of learning undone")
    check(restored.weight_hash == stable == await weight_hash(b, mem),
          "restore returns the exact checkpointed weights")
    branch = f"{mem}-feature"
    forked = await b.fork(mem, branch, source_tag="stable-v1")
    say(f"   fork 'stable-v1' → '{branch}': starts with weights {short(forked.new_hash)}")
    check(forked.new_hash == stable, "the fork starts from the checkpointed weights")
    r = await b.observe(branch, "Feature branch: use pathlib.Path.open inside with blocks")
    curve.add("fork", r.surprise)
    source_now = await weight_hash(b, mem)
    say(f"   the branch learns on its own: weights {short(stable)} → {short(r.weight_hash)}; "
        f"'{mem}' keeps {short(source_now)}")
    check(source_now == stable, "learning on the fork leaves the source unchanged")
    node = next((n for n in (await b.lineage(prefix=branch)).memories if n.name == branch), None)
    parent = str(node.parent or "").split("/")[-1] if node else ""
    say(f"   lineage: {branch} ← {parent or '?'} @ {(node and node.source_tag) or '?'}")
    check(parent == mem, "the lineage records the fork's parent")


# ---- the picture ---------------------------------------------------------------------------

GROUPS = {"concept": ("teach a concept", "#3b5bdb"), "pattern": ("pattern examples", "#0f8a7a"),
          "experiment": ("risky experiment", "#d9480f"), "fork": ("fork learns", "#7048e8")}


def write_png(curve: Curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; must come before pyplot is imported
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110,
                                      gridspec_kw={"width_ratios": [1, 1.5]})
    first, last = curve.concept[0], curve.concept[-1]
    fig.suptitle(f"Surprise of a repeated concept fell {first:.2f} → {last:.2f}", fontweight="bold")
    xs = [f"#{i}" for i in range(1, len(curve.concept))] + ["check"]
    left.plot(xs, curve.concept, marker="o", color=GROUPS["concept"][1], linewidth=2)
    for x, y in zip(xs, curve.concept):
        left.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(8, 6))
    left.set(title="Showing it the same text again and again", xlabel="observation of the same text",
             ylabel="surprise (1 = new, 0 = known)", ylim=(0, 1.1))
    # Each scenario is its own memory, so each gets its own line rather than one joined curve.
    for key, (label, color) in GROUPS.items():
        points = [(i, s) for i, (lab, s) in enumerate(zip(curve.labels, curve.surprises), 1)
                  if lab.startswith(key)]
        if points:
            right.plot(*zip(*points), marker="o", color=color, label=label, linewidth=1.5)
    right.set(title="Every observation the demo made", xlabel="observation", ylabel="surprise",
              ylim=(0, 1.1))
    right.legend(loc="lower right", fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


# ---- an embedded server for runs without --url ---------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, data_dir: Path) -> list[str]:
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    script = Path(sys.executable).with_name("neural-memory")
    if script.exists():
        return [str(script), *args]
    code = "import sys; from serve.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, *args]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, log: Path | None = None,
                 timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Until `url`/healthz answers 200; Unavailable (with the server's log, if we started it)
    when `proc` exits first or `timeout` passes."""
    def shown() -> str:  # read when it is shown: the log of this start, not of an earlier one
        return f"; its log:\n{tail(log)}" if log is not None else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Unavailable(f"the server exited with code {proc.returncode}{shown()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise Unavailable(f"the server at {url} was not healthy after {timeout:.0f} s{shown()}")


def tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C first so Ray and Serve shut down cleanly; then the process group we started."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_TIMEOUT_S)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(15)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


class EmbeddedServer:
    """`neural-memory serve` on a free loopback port, with its own data dir and API key."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.api_key = secrets.token_urlsafe(18)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        # Private means private: none of the caller's NMEM_* (external Redis, S3, Ray) leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("NMEM_")}
        env.update({"NMEM_DATA_DIR": str(self.data_dir), "NMEM_API_KEYS": f"{self.api_key}:demo",
                    "NMEM_HOST": "127.0.0.1", "NMEM_PORT": str(self.port), "HF_HUB_OFFLINE": "1"})
        log = self.data_dir / "server.log"
        with open(log, "ab") as out:
            self._proc = subprocess.Popen(
                serve_command(self.port, self.data_dir), env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_healthy(self.url, self._proc, log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


# ---- entry point ---------------------------------------------------------------------------

async def run(url: str, api_key: str | None, args: argparse.Namespace,
              restart: Callable[[], None] | None) -> None:
    suffix = secrets.token_hex(3)
    config = {"encoder": args.encoder} if args.encoder else None
    curve = Curve()
    concept_mem, python_mem = f"demo-grokking-{suffix}", f"demo-python-{suffix}"
    b = AsyncClient(url, api_key, timeout=REQUEST_TIMEOUT_S)
    try:
        taught = await teach_concept(b, concept_mem, curve, config)
        if restart is not None:
            await asyncio.to_thread(restart)
            await after_restart(b, concept_mem, taught)
        else:
            say("   (session 2 skipped: the server at --url is not ours to restart)")
        await recognise_pattern(b, python_mem, curve, config)
        await checkpoint_restore_fork(b, python_mem, curve)
    finally:
        await b.aclose()
    write_png(curve, args.out)
    say(f"\nSurprise curve written to {args.out}")
    if restart is None:
        say(f"Open {url.rstrip('/')}/ to explore '{concept_mem}' and '{python_mem}' in the dashboard.")


def run_embedded(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="nmem-demo-") as tmp:
        server = EmbeddedServer(Path(tmp))
        say(f"Starting a private server on port {server.port} (data in {tmp}) …")
        server.start()
        try:
            asyncio.run(run(server.url, server.api_key, args, server.restart))
        finally:
            server.stop()
        say("Private server stopped.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="neural-memory demo", description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 "
                   "(default: start a private one and stop it at the end)")
    p.add_argument("--api-key", default=os.environ.get("NMEM_API_KEY"),
                   help="API key for --url (default: $NMEM_API_KEY, which other users cannot read in `ps`; "
                        "none if auth is off)")
    p.add_argument("--out", type=Path, default=Path("surprise.png"), help="PNG to write")
    p.add_argument("--encoder", help="encoder for the demo's memories, e.g. minilm, minilm-int8 or "
                   "hash (default: the server's default; the server refuses one it does not know)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # arrows and dashes must not crash an ASCII terminal
        sys.stdout.reconfigure(errors="replace")
    say("Neural Memory demo: watch a memory learn (its weights change, its surprise falls).")
    try:
        if args.url:
            asyncio.run(run(args.url, args.api_key, args, None))
        else:
            run_embedded(args)
    except (NeuralMemoryError, OSError) as exc:
        print(f"\ndemo failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    say("Demo finished: all claims held.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
