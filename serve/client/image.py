"""Memory images: one self-describing file holding a memory's checkpoint (`.nmem`).

    offset 0   magic         8 bytes  b"\\x89NMI\\r\\n\\x1a\\n" (a binary marker, as PNG's: text-mode
                                      copies and foreign files fail here)
    offset 8   version       uint16, big endian (FORMAT_VERSION)
    offset 10  header size   uint32, big endian (at most MAX_HEADER_BYTES)
    offset 14  header        UTF-8 JSON: ImageHeader (memory config, encoder, weight_hash, step,
                             and the list of parts with their sizes and sha256)
    then       the parts' bytes, in the header's order, nothing after the last one

The payload is a list of named parts so the format outlives today's single opaque part
("checkpoint": the bytes of a memory checkpoint, as the server stores them) when checkpoints
become content-addressed parts. Both the server (serve/images.py) and the client read and
write images only through this module; it needs nothing beyond the standard library and
pydantic, and every refusal says what is wrong with the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from errors import IncompatibleState, InvalidInput

__all__ = ["MAGIC", "FORMAT_VERSION", "MEDIA_TYPE", "CONFIG_MEDIA_TYPE", "CHECKPOINT_PART",
           "PartInfo", "ImageHeader", "Image", "new_header", "encode", "decode", "read_bytes",
           "read_file", "write_file"]

MAGIC = b"\x89NMI\r\n\x1a\n"
FORMAT_VERSION = 1
MEDIA_TYPE = "application/vnd.neural-memory.image.v1"  # the file, over HTTP and as an OCI layer
CONFIG_MEDIA_TYPE = "application/vnd.neural-memory.image.config.v1+json"  # its header, in OCI
CHECKPOINT_PART = "checkpoint"
PART_MEDIA_TYPE = "application/vnd.neural-memory.checkpoint"
MAX_HEADER_BYTES = 1 << 20
_PREFIX = struct.Struct(">8sHI")
# No control characters, line or paragraph separators, or bidirectional overrides (which let
# "fx<U+202E>gpj.exe" print as "fxexe.jpg").
_PRINTABLE_LINE = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]{1,200}$"


class PartInfo(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    media_type: str = PART_MEDIA_TYPE
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ImageHeader(BaseModel):
    """What an image says about itself; readable with `head -c` and any JSON tool."""

    model_config = ConfigDict(extra="ignore")  # a newer minor writer may add fields

    format_version: int = FORMAT_VERSION
    # Shown to whoever imports it (the CLI prints them): no control characters, which a crafted
    # image used to clear or spoof the terminal, and no more than a name's worth.
    name: str = Field(pattern=_PRINTABLE_LINE, description="The memory it was exported from.")
    tag: str | None = Field(None, pattern=_PRINTABLE_LINE,
                            description="The checkpoint tag, or None for the live state.")
    config: dict[str, Any]
    encoder: str
    weight_hash: str
    step: int = Field(ge=0)
    created_at: str
    producer: str = Field("", pattern=rf"^({_PRINTABLE_LINE[1:-1]})?$")
    parts: list[PartInfo]

    def part_names(self) -> list[str]:
        return [p.name for p in self.parts]


@dataclass(frozen=True)
class Image:
    header: ImageHeader
    parts: dict[str, bytes]

    def part(self, name: str) -> bytes:
        if name not in self.parts:
            raise IncompatibleState(f"the image has no {name!r} part (it has {sorted(self.parts)}); "
                                    "it was made by a newer or different writer")
        return self.parts[name]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _header_json(header: ImageHeader) -> bytes:
    return json.dumps(header.model_dump(mode="json"), sort_keys=True).encode()


def new_header(*, name: str, tag: str | None, config: dict, weight_hash: str, step: int,
               parts: Iterable[tuple[str, bytes]], producer: str = "") -> ImageHeader:
    """The header for these parts (sizes and hashes computed here)."""
    infos = [PartInfo(name=n, size=len(b), sha256=hashlib.sha256(b).hexdigest()) for n, b in parts]
    return ImageHeader(name=name, tag=tag, config=config, encoder=str(config.get("encoder", "")),
                       weight_hash=weight_hash, step=step, created_at=_now(), producer=producer,
                       parts=infos)


def encode(header: ImageHeader, parts: dict[str, bytes]) -> Iterator[bytes]:
    """The image as chunks (prefix + header, then each part), for streaming or writing."""
    if header.part_names() != list(parts):
        raise InvalidInput(f"parts {list(parts)} do not match the header's {header.part_names()}")
    head = _header_json(header)
    if len(head) > MAX_HEADER_BYTES:
        raise InvalidInput(f"image header is {len(head)} bytes; the limit is {MAX_HEADER_BYTES}")
    yield _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head
    yield from parts.values()


def decode(data: bytes, *, max_bytes: int | None = None, source: str = "the image") -> Image:
    """Parse and verify an image; InvalidInput (or IncompatibleState) says what is wrong."""
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidInput(f"{source} is {len(data)} bytes; the limit is {max_bytes}")
    header, offset = _read_header(data, source)
    expected = offset + sum(p.size for p in header.parts)
    if len(data) < expected:
        raise InvalidInput(f"{source} is truncated: {len(data)} of {expected} bytes "
                           "(an interrupted download or copy?)")
    if len(data) > expected:
        raise InvalidInput(f"{source} has {len(data) - expected} unexpected bytes after its last "
                           "part; it is not an image this version wrote")
    parts: dict[str, bytes] = {}
    for info in header.parts:
        blob = data[offset:offset + info.size]
        offset += info.size
        if hashlib.sha256(blob).hexdigest() != info.sha256:
            raise InvalidInput(f"{source} is corrupt: part {info.name!r} does not match its sha256")
        parts[info.name] = blob
    return Image(header, parts)


def _read_header(data: bytes, source: str) -> tuple[ImageHeader, int]:
    if len(data) < _PREFIX.size:
        raise InvalidInput(f"{source} is not a neural-memory image: only {len(data)} bytes")
    magic, version, size = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise InvalidInput(f"{source} is not a neural-memory image (it starts with {data[:8]!r}; "
                           f"images start with {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise IncompatibleState(f"{source} uses image format version {version}; this version of "
                                f"neural-memory reads version {FORMAT_VERSION}")
    if size > MAX_HEADER_BYTES:
        raise InvalidInput(f"{source} claims a {size}-byte header; the limit is {MAX_HEADER_BYTES}")
    end = _PREFIX.size + size
    if len(data) < end:
        raise InvalidInput(f"{source} is truncated inside its header")
    try:
        header = ImageHeader.model_validate_json(data[_PREFIX.size:end])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])  # which field; empty for the JSON itself
        said = first["msg"]
        if first["type"] == "string_pattern_mismatch":  # a regex means nothing to a reader
            said = "must be one line of 1-200 printable characters (no control or direction characters)"
        raise InvalidInput(f"{source} has an unreadable header: {f'{where}: ' if where else ''}{said}") from None
    if header.format_version != version:  # hand-edited or spliced: which one would be true?
        raise InvalidInput(f"{source} is inconsistent: its header says format version "
                           f"{header.format_version}, its binary prefix {version}")
    if len(set(header.part_names())) != len(header.parts):
        raise InvalidInput(f"{source} names a part twice: {header.part_names()}")
    return header, end


def read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read image {path}: {exc.strerror or exc}") from None


def read_file(path: str | Path, *, max_bytes: int | None = None) -> Image:
    return decode(read_bytes(path), max_bytes=max_bytes, source=str(path))


def write_file(path: str | Path, chunks: Iterable[bytes]) -> int:
    """Write chunks to `path` atomically (a partial file never has the final name, and none is
    left behind when writing fails), readable by its owner only: an image holds every text its
    memory was told, as the server's data directory does (0600 there too)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    written = 0
    try:
        partial.unlink(missing_ok=True)  # one left by a crash keeps its mode through O_TRUNC
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
        partial.replace(path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InvalidInput(f"cannot write image {path}: {exc.strerror or exc}") from None
        raise
    return written
