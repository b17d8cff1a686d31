"""`neural-memory export | import-image | push | pull`: memory images from the command line.

    neural-memory export NAME[@TAG] -o notes.nmem             the live state, or checkpoint TAG
    neural-memory import-image notes.nmem --as NAME
    neural-memory push NAME[@TAG] REGISTRY/REPO:TAG           export + push as an OCI artifact
    neural-memory pull REGISTRY/REPO:TAG --as NAME            pull + import

Each takes the server's --url / --api-key (default NMEM_URL / NMEM_API_KEY); push and pull
take registry credentials as --username / --password (or NMEM_REGISTRY_USERNAME /
NMEM_REGISTRY_PASSWORD), else from the docker config (`docker login`). Errors are printed
as one line and exit with status 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

COMMANDS = ("export", "import-image", "push", "pull")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the image subcommands on the `neural-memory` parser."""
    export = sub.add_parser("export", help="download a memory as an image file (.nmem)")
    export.add_argument("source", metavar="NAME[@TAG]", help="memory, and a checkpoint tag "
                        "(default: its live state)")
    export.add_argument("-o", "--output", type=Path, help="file to write (default NAME.nmem)")
    _server_args(export)

    imp = sub.add_parser("import-image", help="create a memory from an image file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--as", dest="name", required=True, help="name of the new memory")
    _server_args(imp)

    push = sub.add_parser("push", help="push a memory to an OCI registry")
    push.add_argument("source", metavar="NAME[@TAG]")
    push.add_argument("reference", metavar="REGISTRY/REPO:TAG")
    _server_args(push)
    _registry_args(push)

    pull = sub.add_parser("pull", help="pull a memory image from an OCI registry into the server")
    pull.add_argument("reference", metavar="REGISTRY/REPO:TAG")
    pull.add_argument("--as", dest="name", required=True, help="name of the new memory")
    _server_args(pull)
    _registry_args(pull)


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="server URL (default NMEM_URL or http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="server API key (default NMEM_API_KEY)")


def _registry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--username", default=os.environ.get("NMEM_REGISTRY_USERNAME"),
                   help="registry user (default: from the docker config)")
    p.add_argument("--password", default=os.environ.get("NMEM_REGISTRY_PASSWORD"),
                   help="registry password (or NMEM_REGISTRY_PASSWORD)")
    p.add_argument("--docker-config", default=None,
                   help="a docker config.json to read credentials from (default ~/.docker/config.json)")
    p.add_argument("--plain-http", action="store_true", default=None,
                   help="talk HTTP, not HTTPS (the default for localhost registries)")


def split_source(source: str) -> tuple[str, str | None]:
    """NAME[@TAG] -> (name, tag); names cannot contain '@', so the first one splits."""
    name, at, tag = source.partition("@")
    return name, (tag if at else None)


def run(args: argparse.Namespace) -> int:
    from errors import NeuralMemoryError
    from neural_memory import Client

    try:
        with Client(args.url, args.api_key) as client:
            return _COMMANDS[args.command](client, args)
    except NeuralMemoryError as exc:
        print(f"neural-memory {args.command}: {exc}", file=sys.stderr)
        return 1


def _export(client, args: argparse.Namespace) -> int:
    name, tag = split_source(args.source)
    out = args.output or Path(f"{name}@{tag}.nmem" if tag else f"{name}.nmem")
    header = client.export(name, out, tag=tag)
    print(f"exported {args.source} to {out} ({out.stat().st_size:,} bytes, "
          f"weights {header.weight_hash[:12]}, step {header.step})")
    return 0


def _import(client, args: argparse.Namespace) -> int:
    result = client.import_image(args.file, args.name)
    print(f"imported {args.file} as {result.name} (from {result.source}, "
          f"weights {result.weight_hash[:12]}, step {result.step})")
    return 0


def _auth(args: argparse.Namespace):
    from neural_memory.registry import RegistryAuth

    return RegistryAuth(args.username, args.password, args.docker_config, args.plain_http)


def _push(client, args: argparse.Namespace) -> int:
    from neural_memory.registry import push_image

    name, tag = split_source(args.source)
    with tempfile.TemporaryDirectory(prefix="nmem-push-") as tmp:
        path = Path(tmp) / "image.nmem"
        client.export(name, path, tag=tag)
        result = push_image(path, args.reference, _auth(args))
    print(f"pushed {args.source} to {result.reference} ({result.digest}, "
          f"weights {result.header.weight_hash[:12]})")
    return 0


def _pull(client, args: argparse.Namespace) -> int:
    from neural_memory.registry import pull_image

    with tempfile.TemporaryDirectory(prefix="nmem-pull-") as tmp:
        path = Path(tmp) / "image.nmem"
        pull_image(args.reference, path, _auth(args))
        result = client.import_image(path, args.name)
    print(f"pulled {args.reference} as {result.name} (from {result.source}, "
          f"weights {result.weight_hash[:12]}, step {result.step})")
    return 0


_COMMANDS = {"export": _export, "import-image": _import, "push": _push, "pull": _pull}
