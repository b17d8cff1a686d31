"""Pure (de)serialisation for storage: bytes in, bytes out, no I/O.

Checkpoint objects are framed so a reader can prove it got exactly what was written:

    b"NMCK" | version (1 byte) | sha256(payload) (32 bytes) | len(payload) (8 bytes, big-endian) | payload

A flipped byte anywhere (magic, digest, length or payload) or a truncated object fails
`unframe` with CheckpointCorrupt. WAL entries become stream fields: `step` (ASCII int),
`vectors` (raw bytes), `meta` (msgpack of every other field) and, when the entry has one, `seq`
(ASCII int: its position in the memory's log, see actors/wal.py), so trims read no msgpack.
A write record (what a retry of an answered write is told) is msgpack too: its floats stay
exact float64 in 9 bytes each, and its fingerprint is 32 raw bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import msgpack

from errors import CheckpointCorrupt, InvalidInput

__all__ = [
    "HEADER_SIZE",
    "frame",
    "unframe",
    "encode_wal_entry",
    "decode_wal_entry",
    "encode_write_record",
    "decode_write_record",
    "dumps_json",
    "loads_json",
]

_MAGIC = b"NMCK"
_VERSION = 1
_HEADER = struct.Struct(">4sB32sQ")
HEADER_SIZE = _HEADER.size  # 45 bytes


def frame(payload: bytes) -> tuple[bytes, str]:
    """Wrap `payload` in the checkpoint frame; returns (framed bytes, sha256 hex of payload)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidInput(f"checkpoint data must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    digest = hashlib.sha256(payload).digest()
    return _HEADER.pack(_MAGIC, _VERSION, digest, len(payload)) + payload, digest.hex()


def unframe(blob: bytes, where: str) -> tuple[bytes, str]:
    """Check the frame of a stored object; returns (payload, sha256 hex). `where` names it in errors."""
    if len(blob) < HEADER_SIZE:
        raise CheckpointCorrupt(f"checkpoint {where} is truncated: {len(blob)} bytes, shorter than its header")
    magic, version, digest, size = _HEADER.unpack_from(blob)
    if magic != _MAGIC or version != _VERSION:
        raise CheckpointCorrupt(f"checkpoint {where} has a bad header (magic {magic!r}, version {version})")
    payload = blob[HEADER_SIZE:]
    if len(payload) != size:
        raise CheckpointCorrupt(
            f"checkpoint {where} is truncated or padded: header says {size} bytes, found {len(payload)}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointCorrupt(f"checkpoint {where} fails its sha256 check: the stored bytes were altered")
    return payload, digest.hex()


def encode_wal_entry(entry: dict[str, Any]) -> dict[str, bytes]:
    """Turn a WAL entry (step, vectors, texts, domain, options, ...) into Redis stream fields."""
    if not isinstance(entry, dict):
        raise InvalidInput(f"WAL entry must be a dict, got {type(entry).__name__}")
    step = entry.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidInput(f"WAL entry needs an integer 'step' >= 0, got {step!r}")
    vectors = entry.get("vectors")
    if not isinstance(vectors, (bytes, bytearray, memoryview)):
        raise InvalidInput(
            "WAL entry 'vectors' must be bytes (e.g. array.astype(np.float32).tobytes()), "
            f"got {type(vectors).__name__}"
        )
    texts = entry.get("texts", [])
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidInput("WAL entry 'texts' must be a list of strings")
    seq = entry.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        raise InvalidInput(f"WAL entry 'seq' must be an integer >= 0, got {seq!r}")
    meta = {k: v for k, v in entry.items() if k not in ("step", "vectors", "seq")}
    meta.setdefault("texts", [])
    meta.setdefault("domain", None)
    meta.setdefault("options", {})
    try:
        packed = msgpack.packb(meta, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"WAL entry fields must be plain data (str, int, float, list, dict): {exc}") from exc
    fields = {"step": str(step).encode(), "vectors": bytes(vectors), "meta": packed}
    if seq is not None:
        fields["seq"] = str(seq).encode()
    return fields


def decode_wal_entry(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """Inverse of encode_wal_entry (fields as returned by XRANGE with bytes keys)."""
    meta = msgpack.unpackb(fields[b"meta"], raw=False)
    entry = {"step": int(fields[b"step"]), "vectors": fields[b"vectors"], **meta}
    if b"seq" in fields:
        entry["seq"] = int(fields[b"seq"])
    return entry


def encode_write_record(record: dict[str, Any]) -> bytes:
    """Pack {request_id, fingerprint (sha256 hex or None), answer (dict or None)}."""
    request_id, fingerprint = record.get("request_id"), record.get("fingerprint")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidInput(f"a write record needs a request_id string, got {request_id!r}")
    try:
        packed_print = None if fingerprint is None else bytes.fromhex(fingerprint)
        return msgpack.packb([request_id, packed_print, record.get("answer")], use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a write record needs a hex fingerprint and a plain-data answer: {exc}") from exc


def decode_write_record(raw: bytes) -> dict[str, Any]:
    """Inverse of encode_write_record."""
    request_id, fingerprint, answer = msgpack.unpackb(raw, raw=False)
    return {"request_id": request_id, "fingerprint": None if fingerprint is None else fingerprint.hex(),
            "answer": answer}


def dumps_json(value: Any) -> bytes:
    """Compact, key-sorted JSON (records, checkpoint info, history items)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"value must be JSON-serialisable: {exc}") from exc


def loads_json(raw: bytes | str) -> Any:
    return json.loads(raw)
