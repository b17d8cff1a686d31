"""State <-> bytes. Pure functions: bytes in, bytes out; no files, no network.

Every object this module writes has one layout:
    b"NMEM" | u32 header length | msgpack header | raw little-endian array bytes
The header holds the format version, a `kind`, the caller's fields, and for every array its
name, dtype, shape and byte range; `payload_sha256` covers the arrays, so a flipped byte is
caught on load. Format 2 (today) writes a memory as named parts (`pack` each, see
`memory.state`) and `to_bytes` as one object whose arrays are those parts. Format 1 (until
Dec 2026: one object with the network and the bounded pattern book) is still read by
`decode_v1`. The `weight_hash` is sha256 over the network weights' canonical bytes.
"""

from __future__ import annotations

import hashlib
import struct

import msgpack
import numpy as np
import torch

from memory.errors import IncompatibleState

MAGIC = b"NMEM"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_NUMPY = {"float32", "float64", "float16", "int64", "int32", "int16", "uint8"}


def _canonical(weights: torch.Tensor | np.ndarray) -> np.ndarray:
    """The weights as a contiguous little-endian array (no copy where they already are one)."""
    array = weights.detach().contiguous().cpu().numpy() if isinstance(weights, torch.Tensor) else weights
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))


def weight_hash(named: list[tuple[str, torch.Tensor | np.ndarray]]) -> str:
    """sha256 over named weights: a tensor and its saved array (same dtype) hash alike."""
    digest = hashlib.sha256()
    for name, weights in named:
        array = _canonical(weights)
        digest.update(f"{name}:{tuple(array.shape)}:torch.{array.dtype.name}|".encode())  # str(torch dtype)
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def pack(kind: str, fields: dict, arrays: dict[str, np.ndarray | torch.Tensor]) -> bytes:
    """One self-checking object: `fields` (msgpack-able) plus named arrays or tensors."""
    index, blobs, offset = [], [], 0
    for name, array in arrays.items():
        if isinstance(array, torch.Tensor):
            array = array.detach().contiguous().cpu().numpy()
        array = np.ascontiguousarray(array)
        if array.dtype.name not in _NUMPY:
            raise TypeError(f"array {name!r} has unsupported dtype {array.dtype}")
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        index.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                      "offset": offset, "nbytes": len(blob)})
        blobs.append(blob)
        offset += len(blob)
    payload = b"".join(blobs)
    header = dict(fields, kind=kind, format_version=FORMAT_VERSION, arrays=index,
                  payload_sha256=hashlib.sha256(payload).hexdigest())
    packed = msgpack.packb(header, use_bin_type=True)
    return MAGIC + struct.pack("<I", len(packed)) + packed + payload


def unpack(data: bytes, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(fields, {name: read-only array viewing `data`}) of an object written by `pack`."""
    header, payload = _open(data)
    if header.get("format_version") != FORMAT_VERSION or header.get("kind") != kind:
        raise IncompatibleState(f"expected a {kind!r} object of format {FORMAT_VERSION}, found "
                                f"{header.get('kind')!r} of format {header.get('format_version')!r}")
    return header, _arrays(header, payload)


def arrays_of(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """(fields, arrays) of an object written by `pack`, whatever its kind (a check over all)."""
    header, payload = _open(data)
    return header, _arrays(header, payload)


def _arrays(header: dict, payload: memoryview) -> dict[str, np.ndarray]:
    arrays = {}
    for entry in header["arrays"]:
        raw = payload[entry["offset"] : entry["offset"] + entry["nbytes"]]
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        arrays[entry["name"]] = np.frombuffer(raw, dtype=dtype).reshape(entry["shape"])
    return arrays


def format_version(data: bytes) -> int:
    """The format version of a state blob (IncompatibleState if it is not one we read)."""
    header, _ = _open(data, check_payload=False)
    return header["format_version"]


def _open(data, check_payload: bool = True) -> tuple[dict, memoryview]:
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:4]) != MAGIC:
        raise IncompatibleState("not a neural memory state (missing NMEM magic bytes)")
    view = memoryview(data).cast("B")
    if len(view) < 8:
        raise IncompatibleState("neural memory state is truncated")
    (length,) = struct.unpack("<I", view[4:8])
    try:
        header = msgpack.unpackb(view[8 : 8 + length], raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise IncompatibleState(f"neural memory state header is unreadable: {exc}") from exc
    version = header.get("format_version") if isinstance(header, dict) else None
    if version not in READABLE_VERSIONS:
        raise IncompatibleState(f"state format version {version!r} is not supported "
                                f"(this build reads {list(READABLE_VERSIONS)})")
    payload = view[8 + length :]
    if check_payload and hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise IncompatibleState("neural memory state is corrupt or truncated (payload hash mismatch)")
    return header, payload


def decode_v1(data: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, {name: tensor}) of a format-1 state (the network plus the old pattern book)."""
    header, payload = _open(data)
    if header["format_version"] != 1:
        raise IncompatibleState(f"expected format 1, found {header['format_version']}")
    tensors = {}
    for entry in header["tensors"]:
        raw = payload[entry["offset"] : entry["offset"] + entry["nbytes"]]
        array = np.frombuffer(raw, dtype=np.dtype(entry["dtype"]).newbyteorder("<"))
        tensors[entry["name"]] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="))
                                                  ).reshape(entry["shape"]).clone()
    return header, tensors
