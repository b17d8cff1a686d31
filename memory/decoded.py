"""What this process decoded from a state part's bytes, kept by the identity of the bytes object.

A burst of forks of one base (or wake-ups of its forks) loads the same parts again and again in
one actor process, and the checkpoint store's chunk cache hands out the same bytes object for
the same chunk each time. So a part is verified and decoded once, not once per fork: the
episode chunks (`memory.episodes.DECODED`, ~1.5 ms per 1,024 records) and the head with the
network (`memory.state.HEADS`: its payload sha256 and weight hash, ~5 ms at the default size).
Identity, not content, is the key: hashing a part to find it would cost about what decoding it
does. An entry holds its bytes, so their id cannot be reused while it is kept; only immutable
`bytes` are kept (a view or a mutable buffer could change under the entry). What is kept must
never be written to: the callers copy what a memory will change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

Decoded = TypeVar("Decoded")


class DecodedParts(Generic[Decoded]):
    """`decode(part)` for each part's bytes, the least recently used out first past `max_bytes`
    of parts kept (0: keep none)."""

    def __init__(self, decode: Callable[[bytes], Decoded], max_bytes: int) -> None:
        self._decode = decode
        self._max = max_bytes
        self._kept: OrderedDict[int, tuple[bytes, Decoded]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, part: bytes) -> Decoded:
        key = id(part)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] is part:
                self._kept.move_to_end(key)
                return kept[1]
        decoded = self._decode(part)
        if type(part) is bytes and len(part) <= self._max:  # not a view or a mutable buffer
            with self._lock:
                if key not in self._kept:
                    self._kept[key] = (part, decoded)
                    self._size += len(part)
                while self._size > self._max:
                    _key, (out, _decoded) = self._kept.popitem(last=False)
                    self._size -= len(out)
        return decoded
