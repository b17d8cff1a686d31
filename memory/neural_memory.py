"""`NeuralMemory`: the façade an actor holds. A memory whose weights change when it observes.

Two complementary parts (as in complementary-learning-systems theory):
- the Titans network (`memory.titans`): slow, generalising, bounded — it is what learns;
- the pattern book (`memory.patterns`): fast, exact, bounded — it decodes the network's output
  back into text and remembers recent episodes verbatim.

Surprise fuses both: an input is surprising only if the network cannot recall its content
*and* no stored pattern resembles it (s = s_network · s_episodic). `consolidate()` replays
episodes into the weights ("like sleep"), anchors them with online EWC and merges
near-duplicate patterns. Text methods encode in-process; `*_vector(s)` methods take vectors
encoded elsewhere (the Serve encoder deployment).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

import contract
from memory import codec
from memory.config import MemoryConfig
from memory.consolidation import consolidate as run_consolidation
from memory.errors import IncompatibleState, InvalidInput
from memory.patterns import CANDIDATE_SLOTS, PatternBook, nearest_of, top_of
from memory.titans import TitansMemory

ATTENTION_POOL = 32  # slots (closest centroids) whose exemplars compete in infer / attention maps
LOOKUP_BLOCK = 64  # items of a batch whose pattern-book lookups share one centroid scan


class NeuralMemory:
    def __init__(self, config: MemoryConfig | None = None):
        self.config = config or MemoryConfig()
        self.net = TitansMemory(self.config)
        self.book = PatternBook(self.config.pattern_slots, self.config.exemplars_per_slot,
                                self.config.dim, self.net.dtype)
        self.step = 0
        self.avg_surprise = 0.0
        self.domain_counts: Counter[str] = Counter()
        self._hash: str | None = None

    # ---- helpers -------------------------------------------------------------------------
    @property
    def encoder(self):
        from memory.encoders import get_encoder

        return get_encoder(self.config.encoder)

    def _keys(self, vectors) -> torch.Tensor:
        array = np.asarray(vectors, dtype=np.float64)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.config.dim or array.shape[0] == 0:
            raise InvalidInput(f"vectors must have shape (n, {self.config.dim}) with n >= 1, "
                               f"got {tuple(np.shape(vectors))}")
        if not np.isfinite(array).all():
            raise InvalidInput("vectors contain NaN or infinite values")
        keys = torch.from_numpy(array).to(self.net.dtype)
        return keys / keys.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _episodic_surprise(self, cosine: float | None) -> float:
        if cosine is None:
            return 1.0
        mid, width = self.config.calibration
        return 1.0 / (1.0 + math.exp(-(mid - cosine) / width))

    def _fused(self, neural: float, nearest: tuple | None) -> float:
        """Surprise = network surprise × pattern-book surprise (from the nearest exemplar)."""
        return neural * self._episodic_surprise(nearest[2] if nearest else None)

    def _score(self, key: torch.Tensor) -> tuple[float, float, tuple | None]:
        """(fused surprise, network surprise, nearest exemplar) for one key, no update."""
        neural = float(self.net.neural_surprise(key[None])[0])
        nearest = self.book.nearest(key)
        return self._fused(neural, nearest), neural, nearest

    # ---- learning ------------------------------------------------------------------------
    def observe_vectors(self, vectors, texts: list[str], domain: str | None = None,
                        learning_rate: float | None = None) -> dict:
        keys = self._keys(vectors)
        texts = _check_texts(texts, keys.shape[0])
        domain = contract.check_domain(domain)
        learning_rate = contract.check_learning_rate(learning_rate)
        lr_scale = 1.0 if learning_rate is None else learning_rate / self.config.lr
        surprises, activated, delta_sq = [], [], 0.0
        chunk_size = self.config.chunk_size
        block_size = chunk_size * max(1, LOOKUP_BLOCK // chunk_size)  # whole chunks per block
        for block_start in range(0, keys.shape[0], block_size):
            # one pattern-book scan per block; it still sees the block's own earlier writes
            lookup = self.book.lookup(keys[block_start : block_start + block_size])
            for start in range(block_start, min(block_start + block_size, keys.shape[0]), chunk_size):
                chunk = keys[start : start + chunk_size]  # blocks hold whole chunks
                result = self.net.update(chunk, lr_scale)  # network surprise is measured before it
                delta_sq += result["weight_delta"] ** 2
                for offset, neural in enumerate(result["surprise"].tolist()):
                    nearest = lookup.nearest(start - block_start + offset)
                    surprises.append(self._remember(chunk[offset], texts[start + offset], neural,
                                                    nearest, domain, activated))
        self._hash = None
        for s in surprises:
            self.avg_surprise += self.config.surprise_ema * (s - self.avg_surprise)
        if domain:
            self.domain_counts[domain] += len(texts)
        return {"surprise": float(np.mean(surprises)), "surprises": surprises,
                "weight_delta": math.sqrt(delta_sq), "patterns_activated": activated,
                "step": self.step}

    def _remember(self, key, text, neural, nearest, domain, activated: list[str]) -> float:
        """Score one item by its nearest stored exemplar, then store or reinforce it."""
        self.step += 1
        if self.step == 1:  # the running average starts at the first observation
            self.avg_surprise = 1.0
        surprise = self._fused(neural, nearest)
        if nearest and nearest[2] >= self.config.calibration[0]:
            label = self.book.label(nearest[0])
            if label not in activated:
                activated.append(label)
        if nearest and surprise < self.config.reinforce_below:
            self.book.reinforce(nearest[0], key, text, self.step, domain)
        else:
            self.book.add(key, text, self.step, domain)
        return surprise

    def observe(self, text: str | list[str], domain: str | None = None,
                learning_rate: float | None = None) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        _check_texts(texts, len(texts))
        return self.observe_vectors(self.encoder.encode(texts), texts, domain, learning_rate)

    def consolidate(self) -> dict:
        result = run_consolidation(self.net, self.book, self.config)
        self._hash = None
        return result

    # ---- reading -------------------------------------------------------------------------
    def surprise_vector(self, vector, text: str = "") -> dict:
        score, _, nearest = self._score(self._keys(vector)[0])
        if score >= 0.6:
            recommendation = "consolidate" if self.capacity_used >= 0.9 else "learn"
        else:
            recommendation = "skip" if score <= 0.3 else "learn"
        return {"score": score, "nearest_pattern": self.book.texts[nearest[0]][nearest[1]] if nearest else "",
                "recommendation": recommendation}

    def surprise(self, text: str) -> dict:
        _check_texts([text], 1)
        return self.surprise_vector(self.encoder.encode([text])[0], text)

    def _attention(self, key: torch.Tensor, top_k: int, temperature: float,
                   scanned: tuple | None = None, recalled: torch.Tensor | None = None) -> list[dict]:
        """The top_k patterns for a cue, weighted by the book's and the network's agreement.
        `scanned` (book.scan of key) and `recalled` (net.recall of key) are reused if given."""
        if not self.book.used:
            return []
        slots, sims = scanned or self.book.scan(key[None], ATTENTION_POOL)
        candidates = top_of(slots[0], sims[0], max(4 * top_k, 32))
        if not candidates:
            return []
        slots = torch.tensor([c[0] for c in candidates])
        cols = torch.tensor([c[1] for c in candidates])
        vectors = self.book.exemplar_vectors[slots, cols].to(self.net.dtype)
        episodic = torch.tensor([c[2] for c in candidates], dtype=self.net.dtype)
        if recalled is None:
            recalled = self.net.recall(key[None])[0]  # the network's answer for this cue
        neural = self.net.values(vectors) @ recalled  # how well it matches each pattern's content
        w = self.config.recall_neural_weight
        scores = (1 - w) * episodic + w * neural
        order = torch.argsort(scores, descending=True)[:top_k]
        if temperature == 0:  # greedy: all attention on the best pattern
            weights = torch.zeros(len(order), dtype=scores.dtype)
            weights[0] = 1.0
        else:
            weights = torch.softmax(scores[order] / temperature, dim=0)
        return [{"pattern": self.book.texts[candidates[i][0]][candidates[i][1]], "weight": float(wt)}
                for i, wt in zip(order.tolist(), weights.tolist())]

    def infer_vector(self, vector, top_k: int = 5, temperature: float | None = None,
                     max_tokens: int | None = None) -> dict:
        top_k = contract.check_top_k(top_k)
        temperature = contract.check_temperature(temperature)
        max_tokens = contract.check_max_tokens(max_tokens)
        key = self._keys(vector)[0]
        # One centroid scan and one forward pass serve both the answer and its confidence.
        scanned = self.book.scan(key[None], ATTENTION_POOL) if self.book.used else None
        recalled = self.net.recall(key[None])[0]
        attention = self._attention(key, top_k, temperature, scanned, recalled)
        if not attention:
            return {"response": "I have not learned anything yet.", "confidence": 0.0,
                    "attention_weights": []}
        response = attention[0]["pattern"]
        if len(attention) > 1 and attention[1]["weight"] >= 0.5 * attention[0]["weight"]:
            response += f" (related: {attention[1]['pattern']})"
        if max_tokens is not None:
            words = response.split()
            response = " ".join(words[:max_tokens]) + (" …" if len(words) > max_tokens else "")
        neural = float((recalled - self.net.values(key[None])[0]).norm().clamp(max=1.0))
        # scan() lists slots closest first, so its first CANDIDATE_SLOTS rows are nearest()'s
        nearest = nearest_of(scanned[0][0][:CANDIDATE_SLOTS], scanned[1][0][:CANDIDATE_SLOTS])
        score = self._fused(neural, nearest)
        return {"response": response, "confidence": 1.0 - score, "attention_weights": attention}

    def infer(self, prompt: str, top_k: int = 5, temperature: float | None = None,
              max_tokens: int | None = None) -> dict:
        _check_texts([prompt], 1)
        return self.infer_vector(self.encoder.encode([prompt])[0], top_k, temperature, max_tokens)

    def attention_map_vector(self, vector, top_k: int = 10) -> list[dict]:
        return self._attention(self._keys(vector)[0], contract.check_top_k(top_k),
                               contract.DEFAULT_TEMPERATURE)

    def attention_map(self, query: str, top_k: int = 10) -> list[dict]:
        _check_texts([query], 1)
        return self.attention_map_vector(self.encoder.encode([query])[0], top_k)

    def explain(self, top_k: int = 5) -> list[dict]:
        top_k = contract.check_top_k(top_k)
        used = self.book.used
        if not used:
            return []
        pool = torch.topk(self.book.counts[:used].to(torch.float64) + 1e-9 * self.book.last_seen[:used],
                          min(used, 4 * top_k)).indices.tolist()
        latest = torch.stack([self.book.exemplar_vectors[s, len(self.book.texts[s]) - 1] for s in pool])
        recalled = 1.0 - self.net.neural_surprise(latest.to(self.net.dtype))
        patterns = []
        for slot, known in zip(pool, recalled.tolist()):
            repetition = 1.0 - math.exp(-int(self.book.counts[slot]) / 3.0)
            domain = self.book.domains[slot]
            patterns.append({"description": (f"[{domain}] " if domain else "") + self.book.label(slot),
                             "strength": 0.5 * repetition + 0.5 * known,
                             "examples": list(reversed(self.book.texts[slot]))})
        return sorted(patterns, key=lambda p: -p["strength"])[:top_k]

    @property
    def capacity_used(self) -> float:
        return self.book.used / self.book.capacity

    def stats(self) -> dict:
        return {"total_observations": self.step, "weight_parameters": self.net.parameter_count,
                "capacity_used": self.capacity_used, "avg_surprise": self.avg_surprise,
                "domains": sorted(self.domain_counts), "patterns": self.book.used}

    # ---- state ---------------------------------------------------------------------------
    @property
    def weight_hash(self) -> str:
        if self._hash is None:
            self._hash = codec.weight_hash(list(_named("w", self.net.params)))
        return self._hash

    def to_bytes(self) -> bytes:
        from memory.state import state_tensors, state_header

        return codec.encode_state(state_header(self), state_tensors(self))

    @classmethod
    def from_bytes(cls, data: bytes, expected: MemoryConfig | None = None) -> "NeuralMemory":
        from memory.state import restore

        header, tensors = codec.decode_state(data)
        config = MemoryConfig.from_dict(header["config"])
        if expected is not None and (expected.encoder, expected.dim) != (config.encoder, config.dim):
            raise IncompatibleState(
                f"state was made with encoder {config.encoder!r} (dim {config.dim}); this memory "
                f"uses {expected.encoder!r} (dim {expected.dim})")
        memory = cls(config)
        restore(memory, header, tensors)
        return memory


def _named(prefix: str, tensors):
    for i, tensor in enumerate(tensors):
        yield f"{prefix}{i}", tensor


def _check_texts(texts, n: int) -> list[str]:
    if not isinstance(texts, (list, tuple)) or len(texts) != n:
        raise InvalidInput(f"expected {n} text(s), one per vector")
    for text in texts:
        contract.check_text(text)
    return list(texts)
