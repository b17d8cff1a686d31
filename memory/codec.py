"""State <-> bytes. Pure functions: bytes in, bytes out; no files, no network.

Layout: b"NMEM" | u32 header length | msgpack header | raw little-endian tensor bytes.
The header holds the format version, the config, the step, the encoder, the non-tensor state
(pattern texts, stats) and, for every tensor, its name, dtype, shape and byte range. The
`weight_hash` is sha256 over the network weights' canonical bytes (name, shape, data in order);
`payload_sha256` covers every tensor, so any flipped byte is caught on load.
"""

from __future__ import annotations

import hashlib
import struct

import msgpack
import numpy as np
import torch

from memory.errors import IncompatibleState

MAGIC = b"NMEM"
FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "int64": torch.int64}


def _canonical(tensor: torch.Tensor) -> bytes:
    array = tensor.detach().contiguous().cpu().numpy()
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def weight_hash(named: list[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in named:
        digest.update(f"{name}:{tuple(tensor.shape)}:{str(tensor.dtype)}|".encode())
        digest.update(_canonical(tensor))
    return digest.hexdigest()


def encode_state(header: dict, tensors: list[tuple[str, torch.Tensor]]) -> bytes:
    index, blobs, offset = [], [], 0
    for name, tensor in tensors:
        blob = _canonical(tensor)
        index.append({"name": name, "dtype": str(tensor.dtype).removeprefix("torch."),
                      "shape": list(tensor.shape), "offset": offset, "nbytes": len(blob)})
        blobs.append(blob)
        offset += len(blob)
    payload = b"".join(blobs)
    header = dict(header, format_version=FORMAT_VERSION, tensors=index,
                  payload_sha256=hashlib.sha256(payload).hexdigest())
    packed = msgpack.packb(header, use_bin_type=True)
    return MAGIC + struct.pack("<I", len(packed)) + packed + payload


def decode_state(data: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, {name: tensor}); IncompatibleState if the bytes are not a valid state."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:4]) != MAGIC:
        raise IncompatibleState("not a neural memory state (missing NMEM magic bytes)")
    data = bytes(data)
    if len(data) < 8:
        raise IncompatibleState("neural memory state is truncated")
    (length,) = struct.unpack("<I", data[4:8])
    try:
        header = msgpack.unpackb(data[8 : 8 + length], raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise IncompatibleState(f"neural memory state header is unreadable: {exc}") from exc
    if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION:
        version = header.get("format_version") if isinstance(header, dict) else None
        raise IncompatibleState(
            f"state format version {version!r} is not supported (this build reads {FORMAT_VERSION})")
    payload = data[8 + length :]
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise IncompatibleState("neural memory state is corrupt or truncated (payload hash mismatch)")
    tensors = {}
    for entry in header["tensors"]:
        raw = payload[entry["offset"] : entry["offset"] + entry["nbytes"]]
        dtype = _DTYPES[entry["dtype"]]
        array = np.frombuffer(raw, dtype=np.dtype(entry["dtype"]).newbyteorder("<"))
        tensors[entry["name"]] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="))
                                                  ).to(dtype).reshape(entry["shape"]).clone()
    return header, tensors
