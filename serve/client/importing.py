"""Bulk import: files -> items -> batches of observe calls, resumable.

    plan = plan_import([Path("notes.md")], ImportOptions(split="paragraph"), memory="notes")
    plan = plan.into(memory_created_at(client, "notes"))
    ImportRun(client, "notes", plan).run(progress)

Reading and checking (`read_items`) is shared by `neural-memory import` and the dashboard's
upload box (the server parses uploads with this module), so both split files the same way:

- text / markdown (.txt .md .markdown .rst): paragraphs (blank-line separated; a fenced code
  block is one paragraph, blank lines and all), sentences, or lines; whitespace inside an item
  is collapsed;
- JSONL (.jsonl .ndjson): one object per line, `{"text": ..., "domain": ...}` (domain optional,
  or null: then --domain);
- CSV (.csv .tsv): the text from `column` (and the domain from `domain_column`, if given).

Every file is read and checked in full before anything is sent, so a bad file (binary, empty, an
item over the text limit, a bad JSON line, a missing column) is refused with its name and line
and nothing of it is learned. A run then sends batches with deterministic request ids (from the
memory — its name and when it was created —, the options and the files' contents) and records each acknowledged batch in a journal
under the user's cache directory: run the same command again after a crash or Ctrl-C and it
resumes after the last acknowledged batch, while the server answers a batch it already applied
(same request id) without applying it twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import contract
from errors import Busy, InvalidInput, MemoryNotFound, OutOfOrder, PayloadTooLarge

try:
    import fcntl
except ImportError:  # Windows: runs of one import are not kept apart
    fcntl = None

__all__ = ["ImportOptions", "Item", "Plan", "ImportRun", "read_items", "format_of", "plan_import", "memory_created_at",
           "imported_elsewhere", "unfinished_renewal", "Journal",
           "check_in_flight", "FORMATS", "SPLITS", "journal_dir", "DEFAULT_IN_FLIGHT", "MAX_IN_FLIGHT"]

FORMATS = {".txt": "text", ".md": "text", ".markdown": "text", ".rst": "text",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv"}
SPLITS = ("paragraph", "sentence", "line")
# As many texts per request as the server takes: each request's fixed cost (HTTP, Ray hops, one
# log entry) is shared by more items (hash encoder, one client: ~1,050 items/s at 64, ~1,460 at 256).
DEFAULT_BATCH = contract.MAX_BATCH_ITEMS
# Batches sent at once: with two, the server encodes one while it applies the other (hash
# encoder, alternating runs: ~1,600 items/s one at a time, ~1,950 with two); more only queue.
# Each one waiting for its predecessor holds one of the memory's call threads
# (NMEM_ACTOR_MAX_CONCURRENCY, default 8), hence the cap.
DEFAULT_IN_FLIGHT = 2
MAX_IN_FLIGHT = 4
MAX_BATCH_BYTES = 512 * 1024  # texts per request, well under the server's 1 MB body limit
_COLLAPSE_SLICE = 1 << 20  # characters measured at a time by `_collapsed_length`
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
# A full stop after these (or after a single capital, an initial) does not end a sentence.
# ("No." and "p.m." are left out: "He said no. No way." ends a sentence more often than not.)
_ABBREVIATIONS = frozenset("""mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf fig figs approx inc ltd co corp
dept est jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k ph.d""".split())
_BINARY_SNIFF = 8192
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ImportOptions:
    format: str | None = None  # "text" | "jsonl" | "csv"; None: from each file's extension
    split: str = "paragraph"  # text files: "paragraph" | "sentence" | "line"
    column: str = "text"  # CSV: the column holding the text
    domain_column: str | None = None  # CSV: a column holding each row's domain
    domain: str | None = None  # a domain for every item that names none
    batch_size: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in set(FORMATS.values()):
            raise InvalidInput(f"format must be one of {sorted(set(FORMATS.values()))}, not {self.format!r}")
        if self.split not in SPLITS:
            raise InvalidInput(f"split must be one of {list(SPLITS)}, not {self.split!r}")
        if not 1 <= self.batch_size <= contract.MAX_BATCH_ITEMS:
            raise InvalidInput(f"batch size must be 1 to {contract.MAX_BATCH_ITEMS}")
        contract.check_new_domain(self.domain)


@dataclass(frozen=True)
class Item:
    text: str
    domain: str | None
    where: str  # "notes.md:12", for messages


# ---- reading ------------------------------------------------------------------------------

_UTF16_32_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
                  b"\xfe\xff": "UTF-16"}  # longest first: UTF-32 LE begins like UTF-16 LE


def _decode(data: bytes, source: str) -> str:
    encoding = next((name for bom, name in _UTF16_32_BOMS.items() if data.startswith(bom)), None)
    if encoding is not None:
        raise InvalidInput(f"{source} is {encoding} text; import reads UTF-8: convert it first "
                           f"(e.g. iconv -f {encoding} -t UTF-8)")
    at = data.find(b"\x00", 0, _BINARY_SNIFF)
    if at >= 0:
        raise InvalidInput(f"{source} looks binary (a NUL byte at offset {at}); import reads UTF-8 "
                           "text: .txt/.md, .jsonl or .csv")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source} is not UTF-8 text (invalid byte at offset {exc.start}); import "
                           "reads UTF-8 .txt/.md, .jsonl or .csv") from None


def _checked(text: str, domain: str | None, where: str, hint: str = "") -> Item:
    try:
        text = contract.check_new_text(text, field=f"the text at {where}")
    except InvalidInput as exc:
        raise InvalidInput(f"{exc}{hint}") from None
    try:
        return Item(text, contract.check_new_domain(domain), where)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None


def _collapsed(text: str, where: str, hint: str) -> str:
    """`" ".join(text.split())` of an item; one over the text limit is refused without building
    it: a 50 MB line split at once made ~1 GB of words just to be refused."""
    if len(text) > contract.MAX_TEXT_CHARS:
        length = _collapsed_length(text)
        if length > contract.MAX_TEXT_CHARS:
            raise InvalidInput(f"{contract.text_too_long(length, f'the text at {where}')}{hint}")
    return " ".join(text.split())


def _collapsed_length(text: str) -> int:
    """len(" ".join(text.split())), measured a slice at a time."""
    chars = words = 0
    in_word = False  # the slice before ended inside a word
    for start in range(0, len(text), _COLLAPSE_SLICE):
        piece = text[start:start + _COLLAPSE_SLICE]
        split = piece.split()
        chars += sum(map(len, split))
        words += len(split) - (1 if in_word and split and not piece[0].isspace() else 0)
        in_word = bool(split) and not piece[-1].isspace()
    return chars + max(words - 1, 0)


def _text_items(text: str, source: str, opts: ImportOptions, notes: list[str]) -> Iterator[Item]:
    hint = "; use --split sentence or line, or shorten it" if opts.split == "paragraph" else ""
    block: list[str] = []
    start = 1
    # Lines end at a newline (\n, \r\n or \r) only, as editors and `grep -n` count them:
    # str.splitlines() also cut at form feeds (pdftotext's page breaks), U+2028 and U+0085,
    # so the line numbers in messages were off and `--split line` cut inside a line.
    fence: str | None = None  # the opening of a fenced code block we are in (``` or ~~~)
    for number, line in enumerate(_LINE_END.split(text) + [""], start=1):
        if opts.split == "line":
            if contract.has_visible(line):
                where = f"{source}:{number}"
                yield _checked(_collapsed(line, where, hint), opts.domain, where, hint)
            continue
        marker = line.lstrip()[:3]
        if marker in ("```", "~~~") and (fence is None or marker == fence):
            fence = marker if fence is None else None  # a blank line inside one does not end it
        if contract.has_visible(line) or (fence is not None and block):
            if not block:
                start = number
            block.append(line.strip())
            continue
        if block:
            paragraph, where = " ".join(block), f"{source}:{start}"
            block = []
            # cut before collapsing whitespace: the same cuts (a run of it is one cut either way),
            # and each item is measured before it is built (`_collapsed`)
            pieces = [paragraph] if opts.split == "paragraph" else _sentences(paragraph)
            for piece in pieces:
                piece = _collapsed(piece, where, hint)
                if contract.has_visible(piece):
                    yield _checked(piece, opts.domain, where, hint)


def _sentences(paragraph: str) -> list[str]:
    """The paragraph cut after ., ! or ? and a space before a capital, digit, quote or bracket,
    except after an abbreviation or an initial ("Dr. Smith", "J. R. R. Tolkien")."""
    sentences: list[str] = []
    for piece in _SENTENCE_END.split(paragraph):
        if sentences and _ends_in_abbreviation(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return sentences


def _ends_in_abbreviation(text: str) -> bool:
    last = text.rsplit(None, 1)[-1].lstrip("(\"'[")
    if not last.endswith("."):
        return False
    word = last[:-1]
    # an initial is one capital ("J."); "plan b." or "I." end sentences
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper() and word != "I")


def _jsonl_items(text: str, source: str, opts: ImportOptions, notes: list[str]) -> Iterator[Item]:
    # Lines end at "\n" only: str.splitlines() would also cut at U+2028 or U+0085, which JSON
    # strings may hold raw.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{where} is not valid JSON ({exc.msg}); each line must be an object "
                               'like {"text": "...", "domain": "..."}') from None
        except (ValueError, RecursionError) as exc:  # a number of thousands of digits; deep nesting
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
            raise InvalidInput(f"{where} cannot be read as JSON ({reason}); each line must be an object "
                               'like {"text": "...", "domain": "..."}') from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InvalidInput(f'{where} needs an object with a string "text" field')
        domain = record.get("domain")  # absent or null: the --domain default, as an empty CSV cell
        yield _checked(record["text"], opts.domain if domain is None else domain, where)


def _csv_rows(reader: csv.DictReader, source: str) -> Iterator[tuple[int, dict]]:
    """(first line, row) of each row. Strict quoting: a stray quote that opens a field and never
    closes would otherwise swallow every later row into one cell, silently."""
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _not_csv(source, start, exc) from None
        yield start, row


def _not_csv(source: str, line: int, exc: csv.Error) -> InvalidInput:
    return InvalidInput(f"{source}:{line} is not valid CSV ({exc}): a field that starts with a quote must "
                        'end with one, a quote inside it is written twice (""), and a cell holds at most '
                        f"{csv.field_size_limit():,} characters")


def _csv_items(text: str, source: str, opts: ImportOptions, notes: list[str]) -> Iterator[Item]:
    dialect = "excel-tab" if Path(source).suffix.lower() == ".tsv" else "excel"
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect, strict=True)
    try:
        columns = reader.fieldnames or []  # reads the header
    except csv.Error as exc:
        raise _not_csv(source, 1, exc) from None
    for wanted in (opts.column, opts.domain_column):
        if wanted is not None and columns.count(wanted) > 1:
            raise InvalidInput(f"{source} has {columns.count(wanted)} columns named {wanted!r}; rename all but one")
        if wanted is not None and wanted not in columns:
            raise InvalidInput(f"{source} has no column {wanted!r}; its columns are {columns} (name the "
                               "text's with --column, a domain's with --domain-column; `column` / "
                               "`domain_column` on /v1/import/parse)")
    empty = 0
    for number, row in _csv_rows(reader, source):
        if any(map(contract.has_visible, row.get(None, ()))):  # more cells than the header names
            # (an unquoted comma would cut the text; empty trailing ones are harmless)
            raise InvalidInput(f"{source}:{number} has {len(columns) + len(row[None])} fields, the header "
                               f"{len(columns)}; quote a field that holds the delimiter "
                               f"({reader.reader.dialect.delimiter!r})")
        value = row.get(opts.column) or ""
        if not contract.has_visible(value):
            empty += 1  # an empty cell is no text, not an error (as a blank line is in a text file)
            continue
        domain = (row.get(opts.domain_column) or None) if opts.domain_column else None
        yield _checked(value, domain or opts.domain, f"{source}:{number}")
    if empty:  # said, so that a mostly empty column is not mistaken for the whole file
        notes.append(f"{source}: {empty:,} row(s) with an empty {opts.column!r} cell skipped")


_READERS: dict[str, Callable[[str, str, ImportOptions, list[str]], Iterator[Item]]] = {
    "text": _text_items, "jsonl": _jsonl_items, "csv": _csv_items}


def format_of(source: str, opts: ImportOptions) -> str:
    """The format file `source` is read in: --format, else its extension's."""
    fmt = opts.format or FORMATS.get(Path(source).suffix.lower())
    if fmt is None:
        raise InvalidInput(f"cannot tell the format of {source} from its extension ({' '.join(FORMATS)}); "
                           f"name it with --format ({', '.join(sorted(set(FORMATS.values())))}; `format` on "
                           "/v1/import/parse)")
    return fmt


def read_items(data: bytes, source: str, opts: ImportOptions, max_items: int | None = None,
               notes: list[str] | None = None) -> list[Item]:
    """Every item of one file's bytes, checked; InvalidInput (naming `source`) for a bad file,
    PayloadTooLarge for one of more than `max_items` items (read no further). What was left out
    on purpose (empty CSV cells) is said in `notes`, if given."""
    reader = _READERS[format_of(source, opts)](_decode(data, source), source, opts,
                                               notes if notes is not None else [])
    items = list(reader if max_items is None else itertools.islice(reader, max_items + 1))
    if max_items is not None and len(items) > max_items:
        raise PayloadTooLarge(f"{source} splits into more than {max_items:,} items; import it with "
                              "`neural-memory import`, which has no such limit")
    if not items:
        raise InvalidInput(f"{source} has no text to import")
    return items


# ---- planning -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What an import sends: its batches in order, and a key naming this exact import."""

    key: str
    batches: list[list[Item]]
    # Not part of the key, kept in the journal to recognise an earlier import of the same
    # files into the same memory under other options or contents (`imported_elsewhere`):
    sources: tuple[str, ...] = ()  # the files, resolved
    options: dict = field(default_factory=dict)  # ImportOptions as a dict
    memory: str = ""  # which memory: its name and creation time, once `into` has named it
    again_of: str = ""  # a `renewed` plan: the key of the plan it learns again
    notes: tuple[str, ...] = ()  # what the files held that is not learned (see `read_items`)

    @property
    def items(self) -> int:
        return sum(len(b) for b in self.batches)

    def request_id(self, index: int) -> str:
        return f"import-{self.key[:24]}-{index:06d}"

    def renewed(self, key: str | None = None) -> "Plan":
        """The same batches under a fresh key (new request ids, a new journal): learned again.
        `key`: an interrupted earlier renewal's (`unfinished_renewal`), to finish that one."""
        renewed = replace(self, key=key) if key else self._keyed(str(uuid.uuid4()))
        return replace(renewed, again_of=self.key)

    def into(self, created_at: str) -> "Plan":
        """This plan for the memory created at `created_at` (see `memory_created_at`): the
        same memory has the same key whichever URL reaches its server, and a memory created
        anew under the name (or on another server) gets another key, so it learns the files."""
        salt = f"memory created {created_at}"
        return replace(self._keyed(salt), memory=f"{self.memory} {salt}")

    def _keyed(self, salt: str) -> "Plan":
        return replace(self, key=hashlib.sha256(f"{self.key}:{salt}".encode()).hexdigest())


def memory_created_at(client: Any, memory: str) -> str:
    """When `memory` was created, from its lineage node (MemoryNotFound if there is none)."""
    nodes = client.lineage(prefix=memory, limit=1).memories  # the name itself sorts first
    if not nodes or nodes[0].name != memory:
        raise MemoryNotFound(f"memory {memory} not found: create it first, or import with --create")
    return nodes[0].created_at or ""


def _batches(items: list[Item], size: int) -> list[list[Item]]:
    """Consecutive items of one domain, at most `size` and MAX_BATCH_BYTES per batch."""
    out: list[list[Item]] = []
    weight = 0
    for item in items:
        cost = len(item.text.encode()) + 16
        last = out[-1] if out else None
        if last is None or len(last) >= size or last[0].domain != item.domain or weight + cost > MAX_BATCH_BYTES:
            out.append([])
            weight = 0
        out[-1].append(item)
        weight += cost
    return out


def plan_import(paths: list[Path], opts: ImportOptions, memory: str = "") -> Plan:
    """Read and check every file, then cut the items into batches."""
    if not paths:
        raise InvalidInput("name at least one file to import")
    items: list[Item] = []
    notes: list[str] = []
    digest = hashlib.sha256(json.dumps([memory, asdict(opts)], sort_keys=True).encode())
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
        # how it is read too: the same bytes in another format (or a .tsv's tabs) are other items
        digest.update(hashlib.sha256(data).digest() + f"{format_of(str(path), opts)}{path.suffix.lower()}".encode())
        items += read_items(data, str(path), opts, notes=notes)
    return Plan(digest.hexdigest(), _batches(items, opts.batch_size),
                sources=tuple(str(path.resolve()) for path in paths), options=asdict(opts), memory=memory,
                notes=tuple(notes))


# ---- running ------------------------------------------------------------------------------

def journal_dir() -> Path:
    """Where import journals live: $NMEM_IMPORT_JOURNAL_DIR, else the user's cache directory."""
    configured = os.environ.get("NMEM_IMPORT_JOURNAL_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "neural-memory" / "imports"


def _journal_path(key: str) -> Path:
    return journal_dir() / f"{key}.json"


@dataclass
class Journal:
    """Acknowledged batches of one import (its plan key), saved after every batch, with what
    the import was (its plan's memory, sources, options and size)."""

    path: Path
    done_batches: int = 0
    done_items: int = 0
    finished: bool = False
    about: dict = field(default_factory=dict)  # {"memory", "sources", "options", "items"}

    @classmethod
    def load(cls, key: str, plan: Plan | None = None) -> Journal:
        """The journal of plan key `key` (empty if none); `plan`, if given, is what it records."""
        journal = cls.read(_journal_path(key)) or cls(_journal_path(key))
        if plan is not None:
            journal.about = {"memory": plan.memory, "sources": list(plan.sources), "options": plan.options,
                             "items": plan.items, "again_of": plan.again_of}
        return journal

    @classmethod
    def read(cls, path: Path) -> Journal | None:
        try:
            saved = json.loads(path.read_text())
            return cls(path, int(saved["done_batches"]), int(saved["done_items"]), bool(saved["finished"]),
                       dict(saved.get("about") or {}))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # none yet, or unreadable: start from the beginning (ids dedupe)

    @staticmethod
    @contextmanager
    def held(key: str, memory: str) -> Iterator[None]:
        """The import of plan key `key` run by this process alone: Busy while another process
        runs it (the same files, options and memory), which would resume from a journal still
        being written."""
        lock_path = _journal_path(key).with_suffix(".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # no advisory locks here (Windows): runs are not kept apart
            yield
            return
        while True:
            with open(lock_path, "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise Busy(f"another run of this import into {memory} is under way (the same files and "
                               "options); wait for it to finish, or stop it and run this command again to "
                               "resume") from None
                if not _same_file(lock, lock_path):  # locked a file a finished run had just removed
                    continue
                try:
                    yield
                finally:
                    lock_path.unlink(missing_ok=True)  # while held: a run that opened it now retries
                return

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps({"done_batches": self.done_batches, "done_items": self.done_items,
                                    "finished": self.finished, "about": self.about}))
        os.replace(temp, self.path)  # atomic: a kill leaves the old journal or the new one

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _same_file(opened, path: Path) -> bool:
    """Whether `path` still names the file `opened` is (not removed or replaced since)."""
    try:
        return os.stat(path).st_ino == os.fstat(opened.fileno()).st_ino
    except FileNotFoundError:
        return False


def _journals() -> Iterator[Journal]:
    """Every readable journal on this machine, by file name."""
    for path in sorted(journal_dir().glob("*.json")):
        journal = Journal.read(path)
        if journal is not None:
            yield journal


def unfinished_renewal(plan: Plan) -> Journal | None:
    """An interrupted run of `plan` renewed (`--again`: the same files, options and memory,
    learned again), if any: running `--again` once more finishes it rather than starting over,
    which would learn its acknowledged part twice."""
    return next((j for j in _journals() if not j.finished and j.about.get("again_of") == plan.key), None)


def imported_elsewhere(plan: Plan) -> list[Journal]:
    """Imports, finished or not, under another plan key, of any of `plan`'s files into the same
    memory (same name, same creation): the same files with other options, or files changed
    since. Their request ids differ from this plan's, so running this one would learn again
    what they learned; the command asks first. Unfinished ones first."""
    if not plan.memory:
        return []
    found = [journal for journal in _journals()
             if journal.path.stem != plan.key and journal.done_batches
             and journal.about.get("memory") == plan.memory
             and set(journal.about.get("sources") or ()) & set(plan.sources)]
    return sorted(found, key=lambda j: j.finished)


def check_in_flight(in_flight: int) -> int:
    if not 1 <= in_flight <= MAX_IN_FLIGHT:
        raise InvalidInput(f"in_flight must be 1-{MAX_IN_FLIGHT}, got {in_flight}")
    return in_flight


@dataclass
class ImportRun:
    """Send a plan's batches to `memory` through a `neural_memory.Client`, resuming its journal.

    `in_flight` batches are sent at once, each naming the one before it (`after_request_id`),
    so the server encodes the next batch while it applies this one, and still applies them in
    order. The journal records the acknowledged prefix: after a crash up to `in_flight`
    batches past it may have been applied, and resending them (same request ids) applies
    nothing twice."""

    client: Any
    memory: str
    plan: Plan
    in_flight: int = DEFAULT_IN_FLIGHT
    journal: Journal = field(init=False)

    def __post_init__(self) -> None:
        check_in_flight(self.in_flight)
        self.journal = Journal.load(self.plan.key, self.plan)

    def run(self, on_batch: Callable[[int, float], None] | None = None) -> dict:
        """Send every batch not yet acknowledged; `on_batch(items, mean surprise)` after each.
        `repeated_items`: items of batches the server answered as applied before (same request
        ids: a run whose journal was lost or fell behind), so not learned by this run."""
        journal, batches = self.journal, self.plan.batches
        repeated_items = 0  # in batches the server had applied already (answered, not learned again)
        sent: deque[tuple[int, Future]] = deque()
        following = journal.done_batches
        pool = ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix="import")
        try:
            while journal.done_batches < len(batches):
                while following < len(batches) and len(sent) < self.in_flight:
                    after = self.plan.request_id(following - 1) if sent else None
                    sent.append((following, pool.submit(self._send, following, after)))
                    following += 1
                index, future = sent.popleft()
                try:
                    result = future.result()
                except OutOfOrder:  # its predecessor is acknowledged by now: once more, alone
                    result = self._send(index, None)
                batch = batches[index]
                repeated_items += len(batch) if result.repeated else 0
                journal.done_batches, journal.done_items = index + 1, journal.done_items + len(batch)
                journal.finished = journal.done_batches == len(batches)
                journal.save()
                if on_batch is not None:
                    on_batch(len(batch), float(result.surprise))
        finally:
            # A failure or Ctrl-C is reported at once: the batches behind it are not waited for
            # here (one may wait on the server for the failed one) and are not journaled; the
            # interpreter still joins their threads when it exits.
            pool.shutdown(wait=False, cancel_futures=True)
        journal.finished = True
        journal.save()
        return {"memory": self.memory, "items": self.plan.items, "batches": len(batches),
                "repeated_items": repeated_items}

    def _send(self, index: int, after: str | None) -> Any:
        batch = self.plan.batches[index]
        return self.client.observe(self.memory, [item.text for item in batch], domain=batch[0].domain,
                                   request_id=self.plan.request_id(index), after_request_id=after)
