"""The `neural-memory` command: `serve`, `mcp`, `demo`, and memory images.

    neural-memory serve [--host 127.0.0.1] [--port 8000] [--data-dir ./.neural-memory]
                        [--ray-address ADDR]
    neural-memory mcp   [--url http://127.0.0.1:8000] [--api-key KEY] [--memory NAME]
    neural-memory demo  ...        (see `neural-memory demo --help`)
    neural-memory export | import-image | push | pull ...   (neural_memory.commands)
    neural-memory gc    [--data-dir DIR] [--grace SECONDS] [--dry-run]
    neural-memory --version

Heavy imports (Ray, torch, the MCP SDK) happen inside the subcommand that needs them, so
`--help` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from neural_memory import commands as image_commands
from serve.settings import INGRESS_MODES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neural-memory",
        description="Neural Memory Cluster: memories for LLM agents that learn.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("serve", help="run Ray + Serve + the gateway here until Ctrl-C")
    # Flags left out fall back to NMEM_* and then the defaults (serve.app.read_settings).
    run.add_argument("--host", default=None,
                     help="bind address (NMEM_HOST, default 127.0.0.1; anything else requires API keys)")
    run.add_argument("--port", type=int, default=None, help="HTTP port (NMEM_PORT, default 8000)")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="embedded Valkey + checkpoints (NMEM_DATA_DIR, default ./.neural-memory)")
    run.add_argument("--ray-address", default=None,
                     help="join this Ray cluster instead of starting a local one (NMEM_RAY_ADDRESS)")
    run.add_argument("--gateway-replicas", type=int, default=None)
    run.add_argument("--encoder-replicas", type=int, default=None)
    run.add_argument("--ingress", choices=INGRESS_MODES, default=None,
                     help="who holds the port (NMEM_INGRESS, default auto: direct for one gateway "
                          "replica of a Ray this command starts, else proxy): direct, the gateway "
                          "replica itself (fastest); proxy, Serve's Python proxy; haproxy, Ray's "
                          "HAProxy ingress (several replicas; see the README)")

    mcp = sub.add_parser("mcp", help="stdio MCP server for desktop clients, proxying to a gateway")
    mcp.add_argument("--url", default=os.environ.get("NMEM_URL", "http://127.0.0.1:8000"),
                     help="gateway base URL (default http://127.0.0.1:8000 or NMEM_URL)")
    mcp.add_argument("--api-key", default=os.environ.get("NMEM_API_KEY"),
                     help="API key for the gateway (default NMEM_API_KEY, which other users cannot read in `ps`)")
    mcp.add_argument("--memory", default=os.environ.get("NMEM_DEFAULT_MEMORY"),
                     help="memory used when a tool call names none (created on first use; default "
                          "NMEM_DEFAULT_MEMORY, else the gateway's own default)")

    sub.add_parser("demo", help="guided demo against a running or fresh server",
                   add_help=False)
    image_commands.add_commands(sub)
    _add_gc_command(sub)
    return parser


# ---- neural-memory gc: checkpoint garbage collection by hand (the supervisor also runs it) ----

def _add_gc_command(sub: argparse._SubParsersAction) -> None:
    gc = sub.add_parser("gc", help="delete checkpoint chunks no checkpoint names (safe while serving)")
    gc.add_argument("--data-dir", type=Path, default=None,
                    help="the server's data directory (NMEM_DATA_DIR; storage otherwise from NMEM_*)")
    gc.add_argument("--grace", type=float, default=None,
                    help="keep chunks written or reused this recently, in seconds, at least 60 "
                         "(NMEM_GC_GRACE_SECONDS, default 900)")
    gc.add_argument("--dry-run", action="store_true", help="count what would be deleted (`deleted`, with `dry_run`: true); delete nothing")
    gc.add_argument("--wait", type=float, default=120.0,
                    help="while another collection holds the lock (a forget deleting what it erased), try "
                         "again for up to this many seconds (default 120; 0: once)")


def _gc(args: argparse.Namespace) -> int:
    import json

    from pydantic import ValidationError

    from cluster import ClusterSettings
    from cluster.collector import collect_once
    from errors import NeuralMemoryError
    from serve.settings import settings_problems

    try:
        settings = ClusterSettings()
    except ValidationError as exc:
        print(f"neural-memory gc: bad settings: {settings_problems(exc)}", file=sys.stderr)
        return 2
    storage = settings.storage
    if args.data_dir is not None:
        storage = storage.model_copy(update={"data_dir": args.data_dir})
    if storage.embedded_redis and not storage.valkey_dir.is_dir():
        # an embedded store is found by its folder: starting one here would collect nothing
        print(f"neural-memory gc: no server data at {storage.data_dir.resolve()}: pass --data-dir (the "
              "server's NMEM_DATA_DIR) or NMEM_REDIS_URL for a server with its own Redis", file=sys.stderr)
        return 2
    grace = settings.gc_grace_seconds if args.grace is None else args.grace
    try:
        report = collect_once(storage, grace, dry_run=args.dry_run, wait_seconds=max(0.0, args.wait))
    except NeuralMemoryError as exc:
        print(f"neural-memory gc: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict()))
    if report.unreadable:  # nothing is swept while a manifest's chunks are unknown
        print(f"neural-memory gc: deleted nothing: {report.unreadable} checkpoint object(s) cannot be read "
              f"({', '.join(report.unreadable_keys)}), so the chunks they name are unknown. A checkpoint "
              "that cannot be read is lost: delete its file (or object), or the memory, and run gc again",
              file=sys.stderr)
        return 1
    if not report.ran:
        print(f"neural-memory gc: did not run within {args.wait:g} s: {report.busy}; run it again later "
              "(or with a longer --wait)", file=sys.stderr)
        return 1
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neural-memory-cluster")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _serve(args: argparse.Namespace) -> int:
    from errors import NeuralMemoryError
    from serve.local import ServeOptions, run_server

    opts = ServeOptions(host=args.host, port=args.port, data_dir=args.data_dir,
                        ray_address=args.ray_address, gateway_replicas=args.gateway_replicas,
                        encoder_replicas=args.encoder_replicas, ingress=args.ingress)
    try:
        return run_server(opts)
    except NeuralMemoryError as exc:  # bad settings, a store that cannot be reached: said in a line
        print(f"neural-memory serve: {exc}", file=sys.stderr)
        return 2


def _mcp(args: argparse.Namespace) -> int:
    import anyio

    import contract
    from errors import AuthError, InvalidInput
    from serve.stdio_proxy import run_proxy

    try:  # what is wrong with the arguments is told in a line, not a traceback, and at once
        if args.memory is not None:
            contract.check_memory_name(args.memory, "--memory")
        anyio.run(run_proxy, args.url, args.api_key, args.memory)
    except (InvalidInput, AuthError) as exc:
        print(f"neural-memory mcp: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo(argv: list[str]) -> int:
    try:
        from serve.demo import main as demo_main
    except ImportError as exc:
        print(f"neural-memory demo is not available in this install: {exc}", file=sys.stderr)
        return 2
    return int(demo_main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":  # the demo parses its own arguments
        return _demo(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in image_commands.COMMANDS:
        return image_commands.run(args)
    if args.command == "gc":
        return _gc(args)
    return _mcp(args)


if __name__ == "__main__":
    sys.exit(main())
