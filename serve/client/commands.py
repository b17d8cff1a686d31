"""`neural-memory import | export | import-image | push | pull`: bulk import and memory images.

    neural-memory import notes.md docs/*.txt --memory NAME    learn files (resumable; see below)
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

COMMANDS = ("import", "export", "import-image", "push", "pull")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the import and image subcommands on the `neural-memory` parser."""
    _add_import(sub)
    export = sub.add_parser("export", help="download a memory as an image file (.nmem)")
    export.add_argument("source", metavar="NAME[@TAG]", help="memory, and a checkpoint tag "
                        "(default: its live state)")
    export.add_argument("-o", "--output", type=Path, help="file to write, or a folder for NAME.nmem (default NAME.nmem here)")
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


def _add_import(sub: argparse._SubParsersAction) -> None:
    from neural_memory.importing import DEFAULT_BATCH, DEFAULT_IN_FLIGHT, FORMATS, MAX_IN_FLIGHT, SPLITS

    imp = sub.add_parser("import", help="learn text files (txt/md, JSONL, CSV) into a memory, "
                         "with progress; re-run the same command to resume after a crash")
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument("--memory", required=True, help="the memory to learn into")
    imp.add_argument("--create", action="store_true", help="create the memory first if it does not exist")
    imp.add_argument("--config", default=None, metavar="JSON",
                     help="with --create: the new memory's config, e.g. '{\"encoder\": \"hash\"}' (an existing "
                          "memory keeps its own)")
    imp.add_argument("--format", choices=sorted(set(FORMATS.values())), default=None,
                     help="file format (default: from the extension)")
    imp.add_argument("--split", choices=SPLITS, default="paragraph",
                     help="text files: one item per paragraph (default), sentence or line")
    imp.add_argument("--column", default=None, help="CSV: the column with the text (default text)")
    imp.add_argument("--domain-column", default=None, help="CSV: a column with each row's domain")
    imp.add_argument("--domain", default=None, help="domain for items that name none")
    imp.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                     help=f"texts per request (default {DEFAULT_BATCH})")
    imp.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT,
                     help=f"requests sent at once, applied in order: 1-{MAX_IN_FLIGHT} (default "
                          f"{DEFAULT_IN_FLIGHT}; 1: one at a time, e.g. for a server without after_request_id)")
    imp.add_argument("--again", action="store_true",
                     help="learn the files again even if this exact import already finished")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    _server_args(imp)


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="server URL (default NMEM_URL or http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="server API key (default NMEM_API_KEY, which other users cannot read in `ps`)")


def _registry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--username", default=os.environ.get("NMEM_REGISTRY_USERNAME"),
                   help="registry user (or NMEM_REGISTRY_USERNAME; default: from the docker config)")
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
    from errors import AuthError, NeuralMemoryError
    from neural_memory import Client
    from neural_memory.client import API_KEY_ENV

    try:
        with Client(args.url, args.api_key) as client:
            return _COMMANDS[args.command](client, args)
    except NeuralMemoryError as exc:  # (without a key, the client's own message says how to give one)
        refused = isinstance(exc, AuthError) and bool(args.api_key or os.environ.get(API_KEY_ENV))
        hint = f"; check the key given with --api-key or {API_KEY_ENV}" if refused else ""
        print(f"neural-memory {args.command}: {exc}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the command's own handling (an import's resume note)
        print(f"\nneural-memory {args.command}: interrupted", file=sys.stderr)
        return 130


def _export(client, args: argparse.Namespace) -> int:
    name, tag = split_source(args.source)
    default = Path(f"{name}@{tag}.nmem" if tag else f"{name}.nmem")
    out = args.output / default if args.output is not None and args.output.is_dir() else (args.output or default)
    header = client.export(name, out, tag=tag)
    print(f"exported {args.source} to {out} ({out.stat().st_size:,} bytes, "
          f"weights {header.weight_hash[:12]}, step {header.step})")
    return 0


def _learn_files(client, args: argparse.Namespace) -> int:
    from contract import check_memory_name
    from errors import InvalidInput, MemoryExists
    from neural_memory.importing import (ImportOptions, Journal, check_in_flight, format_of, memory_created_at,
                                         plan_import, unfinished_renewal)

    check_memory_name(args.memory, "--memory")
    opts = ImportOptions(format=args.format, split=args.split, column=args.column or "text",
                         domain_column=args.domain_column, domain=args.domain, batch_size=args.batch_size)
    plan = plan_import(args.paths, opts, memory=args.memory)  # every file read and checked first
    if (args.column or args.domain_column) and not any(format_of(str(p), opts) == "csv" for p in args.paths):
        raise InvalidInput("--column and --domain-column name columns of CSV files, and none of these files is "
                           "CSV (.csv, .tsv, or --format csv); leave them out")
    check_in_flight(args.in_flight)
    config = _config_arg(args.config, args.create)
    for note in plan.notes:
        print(f"note: {note}")
    if args.create:
        try:
            client.create_memory(args.memory, config)
        except MemoryExists:
            pass
    plan = plan.into(memory_created_at(client, args.memory))
    renewal = unfinished_renewal(plan)
    if args.again:  # an interrupted --again run is finished, not started over
        plan = plan.renewed(renewal.path.stem if renewal is not None else None)
    with Journal.held(plan.key, args.memory):
        return _run_import(client, args, plan, renewal)


def _run_import(client, args: argparse.Namespace, plan, renewal) -> int:
    from neural_memory.importing import ImportRun, imported_elsewhere

    run = ImportRun(client, args.memory, plan, in_flight=args.in_flight)
    journal = run.journal
    if journal.finished:
        print(f"already imported: these {plan.items:,} items were learned into {args.memory} by an "
              "earlier run of this command; nothing to do (--again learns them again)")
        if renewal is not None:
            print(f"note: a run of it with --again was interrupted, having learned at least "
                  f"{renewal.done_items:,} of {plan.items:,} items; run it with --again to finish that one")
        return 0
    if not journal.done_batches:
        earlier = imported_elsewhere(plan)
        if earlier and not args.again:
            print(f"neural-memory import: {_imported_before(earlier[0], plan, args.memory)}", file=sys.stderr)
            return 1
        for abandoned in earlier:  # --again: learning the files anew supersedes unfinished runs
            if not abandoned.finished:
                abandoned.discard()
    learned_before = journal.done_items
    if journal.done_batches:
        print(f"resuming: {journal.done_items:,} of {plan.items:,} items ({journal.done_batches} of "
              f"{len(plan.batches)} batches) were already learned; continuing at item "
              f"{journal.done_items + 1:,}")
    with _progress(plan.items, journal.done_items, args.quiet) as advance:
        try:
            outcome = run.run(advance)
        except KeyboardInterrupt:
            print(f"\ninterrupted after {run.journal.done_items:,} of {plan.items:,} items; run the same "
                  "command again to resume", file=sys.stderr)
            return 130
    # An interrupted run may have had batches past its journal applied; resent, they were
    # answered, not learned again, so "at least" is all this run can say of them.
    resumed = f", resumed after the first {learned_before:,} (at least) that an interrupted run learned" \
        if learned_before else ""
    print(f"imported {plan.items:,} items from {len(args.paths)} file(s) into {args.memory} "
          f"in {len(plan.batches)} batches{resumed}")
    if outcome["repeated_items"]:  # the server knew these batches' request ids
        print(f"note: {outcome['repeated_items']:,} of them the server had learned already, from an earlier "
              "run of this import (its record on this machine was lost or behind), and did not learn again")
    return 0


def _config_arg(text: str | None, create: bool) -> dict | None:
    """--config: a JSON object, and only with --create (it does not change an existing memory)."""
    import json

    from errors import InvalidInput

    if text is None:
        return None
    if not create:
        raise InvalidInput("--config sets the config of a memory --create makes; add --create")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--config is not valid JSON ({exc.msg}); give an object like "
                           '\'{"encoder": "hash"}\'') from None
    if not isinstance(config, dict):
        raise InvalidInput('--config must be a JSON object like \'{"encoder": "hash"}\'')
    return config


def _imported_before(earlier, plan, memory: str) -> str:
    """What to do about an earlier import of these files into this memory under other options or
    contents (`imported_elsewhere`)."""
    about = earlier.about
    if about.get("again_of") == plan.key:  # this very import, run with --again
        if not earlier.finished:
            return (f"an import of these files into {memory} with --again was interrupted, having learned at "
                    f"least {earlier.done_items:,} of {about.get('items', 0):,} items; run this command with "
                    "--again to finish it (without --again the files are learned from the start, and what it "
                    "learned twice)")
        how = "by a run of this command with --again"
    else:
        how = _how_it_differs(about, plan)
    if earlier.finished:
        return (f"these files were already imported into {memory} ({earlier.done_items:,} items) {how}; "
                "importing them again learns them twice. Pass --again to learn them again anyway")
    return (f"an unfinished import of these files into {memory} learned "
            f"at least {earlier.done_items:,} of {about.get('items', 0):,} items {how}. Run it again as it "
            "was to resume it, or pass --again to learn these files from the start (what it learned "
            "is then learned twice)")


def _how_it_differs(about: dict, plan) -> str:
    """How an earlier import (its journal's `about`) differs from `plan`, for `_imported_before`."""
    then, now = about.get("options") or {}, plan.options
    shown = lambda value: "unset" if value is None else value  # noqa: E731 - e.g. --format: from the extension
    changed = [f"--{name.replace('_', '-')} {shown(then[name])} (now {shown(now.get(name))})"
               for name in sorted(then) if then[name] != now.get(name)]
    files, named = list(about.get("sources") or ()), list(plan.sources)
    reasons = [f"with {', '.join(changed)}"] if changed else []
    if files != named:  # a file's contents may differ too; these are reason enough
        listed = ", ".join(Path(f).name for f in files)
        reasons.append(f"in another order ({listed})" if sorted(files) == sorted(named)
                       else f"in an import of {listed}")
    return " ".join(reasons) or "with the files as they were then (they have changed since)"


class _progress:
    """A tqdm bar over items: rate, ETA and the running surprise of what was just learned."""

    def __init__(self, total: int, done: int, quiet: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=done, unit="item", disable=quiet, dynamic_ncols=True,
                         smoothing=0.1)
        self._surprise: float | None = None

    def __enter__(self):
        def advance(items: int, surprise: float) -> None:
            self._surprise = surprise if self._surprise is None else 0.8 * self._surprise + 0.2 * surprise
            self._bar.set_postfix(surprise=f"{self._surprise:.3f}", refresh=False)
            self._bar.update(items)
        return advance

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


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


_COMMANDS = {"import": _learn_files, "export": _export, "import-image": _import, "push": _push, "pull": _pull}
