"""`NeuralMemory`: the façade an actor holds. A memory whose weights change when it observes.

Three parts (as in complementary-learning-systems theory):
- the Titans network (`memory.titans`): slow, generalising, fixed-size — it is what learns; it
  re-ranks what the store finds and is half of the surprise signal;
- the episodic store (`memory.episodes`): every distinct text observed, kept verbatim with its
  vector and searchable forever (immutable chunks; a sign-bit scan, then exact cosines) — it
  decodes the network's output back into text and never forgets a fact;
- the hot set (`memory.patterns`): statistics of the most recently active patterns (how often
  each was reinforced, its newest exemplars) for `explain`, replay and `capacity_used`.

Surprise fuses the network and the store: an input is surprising only if the network cannot
recall its content *and* no stored record resembles it (s = s_network · s_episodic).
`consolidate()` replays episodes into the weights ("like sleep"), anchors them with online EWC
and merges near-duplicate hot patterns. Text methods encode in-process; `*_vector(s)` methods
take vectors encoded elsewhere (the Serve encoder deployment).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from contextlib import contextmanager
from typing import Iterator, Mapping

import numpy as np
import torch

import contract
from memory import state
from memory.config import MemoryConfig
from memory.consolidation import consolidate as run_consolidation
from memory.episodes import BlockRecords, EpisodicStore
from memory.errors import InvalidInput
from memory.patterns import HotSet
from memory.titans import TitansMemory

CANDIDATES = 32  # records (closest by cosine) that compete in infer / attention maps, at least
LOOKUP_BLOCK = 64  # items of a batch whose store lookups share one search
# An observation needs only its nearest record (surprise, reinforcement): a close match always
# passes a short sign-bit shortlist; reads rank `config.shortlist` candidates.
NEAREST_SHORTLIST = 16


class NeuralMemory:
    def __init__(self, config: MemoryConfig | None = None, *, loading: bool = False):
        """A new, empty memory. `loading` (memory.state): a saved state's weights overwrite the
        network's next, so none are drawn."""
        self.config = config or MemoryConfig()
        self.net = TitansMemory(self.config, loading=loading)
        self.store = EpisodicStore(self.config.dim, self.config.episode_chunk, self.config.shortlist)
        self.hot = HotSet(self.config.pattern_slots, self.config.exemplars_per_slot)
        self.step = 0
        self.avg_surprise = 0.0
        self.domain_counts: Counter[str] = Counter()
        self.domain_names: list[str] = [""]  # domain ids of records; 0 = no domain
        self.ewc_generation = 0  # consolidations so far: names the immutable EWC part
        self._hash: str | None = None
        # Held while the weights change and while their hash is computed (`changing_weights`).
        self._hash_lock = threading.Lock()

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

    @staticmethod
    def _queries(keys: torch.Tensor) -> np.ndarray:
        return keys.to(torch.float32).numpy()

    def _episodic_surprise(self, cosine: float | None) -> float:
        if cosine is None:
            return 1.0
        mid, width = self.config.calibration
        return 1.0 / (1.0 + math.exp(-(mid - cosine) / width))

    def _fused(self, neural: float, nearest: tuple | None) -> float:
        """Surprise = network surprise × episodic surprise (from the nearest record)."""
        return neural * self._episodic_surprise(nearest[1] if nearest else None)

    def nearest(self, key: torch.Tensor) -> tuple[int, float] | None:
        """(record id, cosine) of the stored record closest to one key; None if empty."""
        ids, sims = self.store.search(self._queries(key[None]), 1, NEAREST_SHORTLIST)
        return (int(ids[0, 0]), float(sims[0, 0])) if ids[0, 0] >= 0 else None

    def _score(self, key: torch.Tensor) -> tuple[float, float, tuple | None]:
        """(fused surprise, network surprise, nearest record) for one key, no update."""
        neural = float(self.net.neural_surprise(key[None])[0])
        nearest = self.nearest(key)
        return self._fused(neural, nearest), neural, nearest

    def _label(self, record: int) -> str:
        """A record's pattern, described by the pattern's newest exemplar."""
        slot = self.hot.slot(self.store.pattern(record))
        newest = self.hot.newest_member(slot) if slot is not None else -1
        return self.store.text(newest if newest >= 0 else record)

    def _domain_id(self, domain: str | None) -> int:
        if not domain:
            return 0
        if domain not in self.domain_names:
            self.domain_names.append(domain)
        return self.domain_names.index(domain)

    def centroids(self, members: np.ndarray) -> np.ndarray:
        """Unit mean vector of each row of record ids (-1 = none), (rows, dim)."""
        valid = members >= 0
        vectors = self.store.vectors(members[valid])
        sums = np.zeros((len(members), self.config.dim), dtype=np.float32)
        np.add.at(sums, np.nonzero(valid)[0], vectors)
        return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)

    # ---- learning ------------------------------------------------------------------------
    def observe_vectors(self, vectors, texts: list[str], domain: str | None = None,
                        learning_rate: float | None = None) -> dict:
        keys = self._keys(vectors)
        texts = _check_texts(texts, keys.shape[0])
        domain = contract.check_domain(domain)
        learning_rate = contract.check_learning_rate(learning_rate)
        lr_scale = 1.0 if learning_rate is None else learning_rate / self.config.lr
        domain_id = self._domain_id(domain)
        queries = self._queries(keys)
        activated: list[str] = []
        with self.changing_weights():  # also after a refused chunk: the chunks before it were learned
            surprises, delta_sq = self._learn(keys, queries, texts, lr_scale, domain_id, activated)
        for s in surprises:
            self.avg_surprise += self.config.surprise_ema * (s - self.avg_surprise)
        if domain:
            self.domain_counts[domain] += len(texts)
        return {"surprise": float(np.mean(surprises)), "surprises": surprises,
                "weight_delta": math.sqrt(delta_sq), "patterns_activated": activated,
                "step": self.step}

    def _learn(self, keys, queries, texts: list[str], lr_scale: float, domain_id: int,
               activated: list[str]) -> tuple[list[float], float]:
        """Learn `keys` chunk by chunk and store each item: its surprises and the squared norm of
        the whole weight change. A chunk whose step would diverge raises InvalidInput with the
        earlier chunks learned (an actor then rebuilds the memory from checkpoint and log)."""
        surprises, delta_sq = [], 0.0
        chunk_size = self.config.chunk_size
        block_size = chunk_size * max(1, LOOKUP_BLOCK // chunk_size)  # whole chunks per block
        for block_start in range(0, keys.shape[0], block_size):
            # one store search per block; records stored by the block's own earlier items are
            # checked item by item (`BlockRecords`)
            block = queries[block_start : block_start + block_size]
            own = BlockRecords(block, first_id=self.store.size)
            ids, sims = self.store.search(block, 1, NEAREST_SHORTLIST)
            for start in range(block_start, min(block_start + block_size, keys.shape[0]), chunk_size):
                chunk = keys[start : start + chunk_size]  # blocks hold whole chunks
                result = self.net.update(chunk, lr_scale)  # network surprise is measured before it
                delta_sq += result["weight_delta"] ** 2
                for offset, neural in enumerate(result["surprise"].tolist()):
                    i, item = start + offset, start + offset - block_start
                    nearest = _closer((int(ids[item, 0]), float(sims[item, 0])), own.nearest(item))
                    size = self.store.size
                    surprises.append(self._remember(queries[i], texts[i], neural, nearest,
                                                    domain_id, activated))
                    if self.store.size > size:
                        own.stored(item)
        return surprises, delta_sq

    def _remember(self, vector: np.ndarray, text: str, neural: float, nearest, domain: int,
                  activated: list[str]) -> float:
        """Score one item by its nearest stored record, then store it (unless the very same
        text is already there) and count it towards its pattern."""
        self.step += 1
        if self.step == 1:  # the running average starts at the first observation
            self.avg_surprise = 1.0
        surprise = self._fused(neural, nearest)
        if nearest and nearest[1] >= self.config.calibration[0]:
            label = self._label(nearest[0])
            if label not in activated:
                activated.append(label)
        if nearest and surprise < self.config.reinforce_below:  # joins the nearest record's pattern
            record, pattern = nearest[0], self.hot.resolve(self.store.pattern(nearest[0]))
            if self.store.text(record) != text:
                record = self.store.append(vector, text, self.step, domain, pattern)
        else:  # founds a pattern of its own
            record = pattern = self.store.append(vector, text, self.step, domain, None)
        self.hot.touch(pattern, record, self.step, domain)
        return surprise

    def observe(self, text: str | list[str], domain: str | None = None,
                learning_rate: float | None = None) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        _check_texts(texts, len(texts))
        return self.observe_vectors(self.encoder.encode(texts), texts, domain, learning_rate)

    def consolidate(self) -> dict:
        anchor = self.net.anchor
        with self.changing_weights():  # also after a refusal: the replay before it changed the weights
            result = run_consolidation(self.net, self.hot, self.store, self.centroids, self.config)
        if self.net.anchor is not anchor:  # new EWC state: a new immutable part
            self.ewc_generation += 1
        return result

    def forget_approximately(self, match) -> dict:
        """Erase the records `match(text, step, domain)` selects and push the network away from
        them: approximate forgetting, for when the history needed to replay is gone (see
        `memory.unlearn`). Returns the count and each text's surprise before and after."""
        from memory.unlearn import forget_approximately  # noqa: PLC0415

        return forget_approximately(self, match)

    # ---- reading -------------------------------------------------------------------------
    def surprise_vector(self, vector, text: str = "") -> dict:
        """How new `text` (encoded as `vector`) is, and what to do with it. "skip" only for a
        text this memory holds already, word for word: a text of a familiar shape may carry a
        new value (a new password, a moved address; the encoder barely tells 555-0101 from
        555-0199), and skipping it would lose that."""
        score, _, nearest = self._score(self._keys(vector)[0])
        nearest_text = self.store.text(nearest[0]) if nearest else None  # None: it holds nothing yet
        if score >= 0.6:
            recommendation = "consolidate" if self.capacity_used >= 0.9 else "learn"
        elif score <= 0.3 and text and nearest_text is not None and _same_words(text, nearest_text):
            recommendation = "skip"
        else:
            recommendation = "learn"
        return {"score": score, "nearest_pattern": nearest_text, "recommendation": recommendation}

    def surprise(self, text: str) -> dict:
        _check_texts([text], 1)
        return self.surprise_vector(self.encoder.encode([text])[0], text)

    def _attention(self, key: torch.Tensor, top_k: int, temperature: float,
                   found: tuple | None = None, recalled: torch.Tensor | None = None) -> list[dict]:
        """The top_k records for a cue, ranked by cosine and by how well each matches what the
        network recalls for the cue — that second term weighted by how well the network knows
        the record itself (1 − its network surprise): a network that has not learned a record
        cannot vouch for it. (Measured on 100k facts: unweighted, the network's noise cost
        recall@1 ~1 point against exact search; weighted, it costs nothing.) `found` (a store
        search for the key, closest first) and `recalled` (net.recall of the key) are reused."""
        ids, sims = found or self.store.search(self._queries(key[None]), max(4 * top_k, CANDIDATES))
        valid = ids[0] >= 0
        ids, sims = ids[0][valid], sims[0][valid]
        if not len(ids):
            return []
        vectors = torch.from_numpy(self.store.vectors(ids)).to(self.net.dtype)
        episodic = torch.from_numpy(sims.astype(np.float64)).to(self.net.dtype)
        if recalled is None:
            recalled = self.net.recall(key[None])[0]  # the network's answer for this cue
        known = 1.0 - self.net.neural_surprise(vectors)  # does the network recall the record?
        neural = self.net.values(vectors) @ recalled  # how well it matches each record's content
        w = self.config.recall_neural_weight
        scores = (1 - w) * episodic + w * known * neural
        order = torch.argsort(scores, descending=True, stable=True)[:top_k]
        if temperature == 0:  # greedy: all attention on the best pattern
            weights = torch.zeros(len(order), dtype=scores.dtype)
            weights[0] = 1.0
        else:
            # shifted, in float64: a tiny temperature overflowed s / T to inf (NaN out), and
            # float32 rounds one below ~1e-45 to 0 (0 / 0)
            top = scores[order].double()
            weights = torch.softmax((top - top.max()) / temperature, dim=0)
        return [{"pattern": self.store.text(int(ids[i])), "weight": float(wt), "step": self.store.step(int(ids[i]))}
                for i, wt in zip(order.tolist(), weights.tolist())]

    def infer_vector(self, vector, top_k: int = 5, temperature: float | None = None,
                     max_tokens: int | None = None) -> dict:
        top_k = contract.check_top_k(top_k)
        temperature = contract.check_temperature(temperature)
        max_tokens = contract.check_max_tokens(max_tokens)
        key = self._keys(vector)[0]
        # One search and one forward pass serve both the answer and its confidence.
        found = self.store.search(self._queries(key[None]), max(4 * top_k, CANDIDATES))
        recalled = self.net.recall(key[None])[0]
        attention = self._attention(key, top_k, temperature, found, recalled)
        if not attention:
            return {"response": "I have not learned anything yet.", "confidence": 0.0,
                    "attention_weights": []}
        response = attention[0]["pattern"]
        if len(attention) > 1 and attention[1]["weight"] >= 0.5 * attention[0]["weight"]:
            response += f" (related: {attention[1]['pattern']})"
        if max_tokens is not None:
            words = response.split()
            # the ellipsis joins the last word: a separate " …" was one word more than asked for
            response = " ".join(words[:max_tokens]) + ("…" if len(words) > max_tokens else "")
        neural = float((recalled - self.net.values(key[None])[0]).norm().clamp(max=1.0))
        nearest = (int(found[0][0, 0]), float(found[1][0, 0]))  # the search lists closest first
        return {"response": response, "confidence": 1.0 - self._fused(neural, nearest),
                "attention_weights": attention}

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
        pool = [slot for slot in self.hot.strongest(4 * top_k) if self.hot.newest_member(slot) >= 0]
        if not pool:
            return []
        latest = self.store.vectors([self.hot.newest_member(slot) for slot in pool])
        keys = torch.from_numpy(latest).to(self.net.dtype)
        recalled = 1.0 - self.net.neural_surprise(keys / keys.norm(dim=1, keepdim=True).clamp_min(1e-12))
        patterns = []
        for slot, known in zip(pool, recalled.tolist()):
            repetition = 1.0 - math.exp(-int(self.hot.count[slot]) / 3.0)
            domain = self.domain_names[int(self.hot.domain[slot])]
            examples = [self.store.text(r) for r in self.hot.member_ids(slot)]
            patterns.append({"description": (f"[{domain}] " if domain else "") + examples[0],
                             "strength": 0.5 * repetition + 0.5 * known, "examples": examples})
        return sorted(patterns, key=lambda p: -p["strength"])[:top_k]

    @property
    def capacity_used(self) -> float:
        """Share of the hot set in use (0-1). At 1.0 each new pattern pushes the least recently
        seen one out of the hot set: nothing is forgotten (the store keeps every record), but
        that pattern's reinforcement count leaves `explain`. consolidate() merges
        near-duplicate patterns and brings a nearly full hot set down to 75 %."""
        return self.hot.used / self.hot.capacity

    def stats(self) -> dict:
        return {"total_observations": self.step, "weight_parameters": self.net.parameter_count,
                "capacity_used": self.capacity_used, "avg_surprise": self.avg_surprise,
                "domains": sorted(self.domain_counts), "patterns": self.hot.used,
                "episodes": self.store.live}

    # ---- state ---------------------------------------------------------------------------
    @contextmanager
    def changing_weights(self) -> Iterator[None]:
        """Around every change of the weights. In an actor, reads run beside a write: meanwhile
        they get the hash of the state before it, and no hash is computed until the change
        is over. (A reader that computed one beside a write published it after the write had
        cleared it: a later answer and checkpoint carried the hash of an older state.)"""
        with self._hash_lock:
            try:
                yield
            finally:
                self._hash = None

    @property
    def weight_hash(self) -> str:
        known = self._hash
        if known is None:
            with self._hash_lock:
                if self._hash is None:
                    self._hash = state.weight_hash(self)
                known = self._hash
        return known

    def state_parts(self) -> dict[str, bytes]:
        """The whole state as named parts: one small mutable `head` (header, network weights and
        momentum, hot set, the newest records); every other part is immutable — the same name
        always holds the same bytes — so a content-addressed store writes only new parts."""
        return state.to_parts(self)

    @classmethod
    def from_parts(cls, parts: Mapping[str, bytes], expected: MemoryConfig | None = None) -> "NeuralMemory":
        """Rebuild a memory exactly from `state_parts()` (IncompatibleState if a part is missing
        or damaged, or if `expected`'s encoder differs from the one the state was made with)."""
        return state.from_parts(cls, parts, expected)

    def to_bytes(self) -> bytes:
        """Every part in one self-describing blob (exports, single-object checkpoints)."""
        return state.to_blob(self)

    @classmethod
    def from_bytes(cls, data: bytes, expected: MemoryConfig | None = None) -> "NeuralMemory":
        """From `to_bytes()` of this or an older format (format 1: the bounded pattern book)."""
        return state.from_blob(cls, data, expected)


def _closer(a: tuple[int, float] | None, b: tuple[int, float] | None) -> tuple[int, float] | None:
    if a is None or a[0] < 0:
        return b
    if b is None or a[1] >= b[1]:
        return a
    return b


def _check_texts(texts, n: int) -> list[str]:
    if not isinstance(texts, (list, tuple)) or len(texts) != n:
        raise InvalidInput(f"expected {n} text(s), one per vector")
    for text in texts:
        contract.check_text(text)
    return list(texts)


def _same_words(a: str, b: str) -> bool:
    """Whether two texts say the same word for word (`contract.same_words`)."""
    return contract.same_words(a) == contract.same_words(b)

