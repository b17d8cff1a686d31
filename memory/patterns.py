"""Pattern book: the episodic half of a memory, and the decoder from weights back to text.

Text cannot come out of an MLP's weights without a decoder, so each memory keeps a bounded set
of pattern slots: a centroid (unit vector), up to `exemplars_per_slot` exemplar texts with their
vectors, a count (how often the slot was reinforced), the step it was last seen, and a domain.
Unsurprising inputs reinforce their nearest slot instead of adding one; when the book is full
the least recently seen slot is evicted (the neural memory keeps what it generalised from it);
`merge_similar` compresses near-duplicate slots during consolidation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

CANDIDATE_SLOTS = 8  # slots (by centroid) whose exemplars are scored for a nearest-exemplar lookup


class PatternBook:
    def __init__(self, slots: int, exemplars: int, dim: int, dtype: torch.dtype):
        self.capacity, self.per_slot, self.dim, self.dtype = slots, exemplars, dim, dtype
        self.used = 0
        self.centroids = torch.zeros(slots, dim, dtype=dtype)  # (slots, dim), unit rows
        self.exemplar_vectors = torch.zeros(slots, exemplars, dim, dtype=torch.float16)
        self.counts = torch.zeros(slots, dtype=torch.int64)
        self.last_seen = torch.zeros(slots, dtype=torch.int64)
        self.sizes = torch.zeros(slots, dtype=torch.int64)  # exemplars held per slot (= len(texts))
        self._bind_views()
        self.texts: list[list[str]] = []  # per used slot, oldest first
        self.domains: list[str | None] = []
        # Slots written since the current ChunkLookup began (only writers read or clear it).
        self.touched: set[int] = set()

    def _bind_views(self) -> None:
        # numpy views of the same memory (the tensors are only ever written in place): per-item
        # writes of one row are several times cheaper through numpy than through torch ops.
        self._centroids_np, self._exemplars_np = self.centroids.numpy(), self.exemplar_vectors.numpy()
        self._counts_np, self._last_seen_np = self.counts.numpy(), self.last_seen.numpy()
        self._sizes_np = self.sizes.numpy()

    # A copy (copy.deepcopy, pickle) carries the tensors only and makes its views of them
    # anew: copied views would be separate arrays, and writes through them would miss the tensors.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_np")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind_views()

    # ---- lookup --------------------------------------------------------------------------
    def nearest(self, query: torch.Tensor) -> tuple[int, int, float] | None:
        """The closest exemplar as (slot, exemplar, cosine); None while the book is empty."""
        if not self.used:
            return None
        slots, sims = self.scan(query[None], CANDIDATE_SLOTS)
        return nearest_of(slots[0], sims[0])

    def scan(self, queries: torch.Tensor, pool: int) -> tuple[np.ndarray, np.ndarray]:
        """For each query (n, dim): the `pool` slots with the closest centroids, closest first
        (n, k), and the cosines to their exemplars (n, k, per_slot), -inf where a place is empty.
        The centroid scan is torch (numpy's bundled BLAS was 10× slower at it here); the rest is
        numpy: on these small shapes torch's per-call overhead was most of the time."""
        queries = queries.to(self.dtype)
        centroid_sims = (queries @ self.centroids[: self.used].T).to(torch.float32).numpy()  # (n, used)
        q = queries.to(torch.float32).numpy()
        k = min(pool, self.used)
        slots = np.argpartition(-centroid_sims, k - 1, axis=1)[:, :k] if k < self.used else \
            np.broadcast_to(np.arange(self.used), centroid_sims.shape)
        order = np.argsort(-np.take_along_axis(centroid_sims, slots, axis=1), axis=1, kind="stable")
        slots = np.take_along_axis(slots, order, axis=1)
        # (n, k, per_slot, dim); torch widens float16 about twice as fast as numpy's astype
        vectors = self.exemplar_vectors[torch.from_numpy(np.ascontiguousarray(slots))].float().numpy()
        sims = np.matmul(vectors.reshape(len(q), -1, self.dim), q[:, :, None]).reshape(len(q), k, -1)
        empty = np.arange(self.per_slot) >= self._sizes_np[slots][..., None]
        sims[empty] = -np.inf
        return slots, sims

    def lookup(self, queries: torch.Tensor) -> "ChunkLookup":
        """Nearest exemplars for a chunk of queries (n, dim) that will be written one by one."""
        return ChunkLookup(self, queries)

    # ---- writes --------------------------------------------------------------------------
    def reinforce(self, slot: int, vector: torch.Tensor, text: str, step: int, domain: str | None):
        count = int(self._counts_np[slot]) + 1
        mean = self._centroids_np[slot] * ((count - 1) / count) + np.asarray(vector) / count
        self._centroids_np[slot] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        self._counts_np[slot] = count
        self._last_seen_np[slot] = step
        self.touched.add(slot)
        if domain and not self.domains[slot]:
            self.domains[slot] = domain
        if text not in self.texts[slot]:
            self._add_exemplar(slot, vector, text)

    def add(self, vector: torch.Tensor, text: str, step: int, domain: str | None) -> int:
        if self.used == self.capacity:
            self._remove(self._least_recent())
        slot = self.used
        self.used += 1
        self._centroids_np[slot] = np.asarray(vector)
        self._counts_np[slot] = 1
        self._last_seen_np[slot] = step
        self.touched.add(slot)
        self.texts.append([])
        self.domains.append(domain)
        self._add_exemplar(slot, vector, text)
        return slot

    def _add_exemplar(self, slot: int, vector: torch.Tensor, text: str):
        texts = self.texts[slot]
        if len(texts) == self.per_slot:  # keep the newest: drop the oldest exemplar
            texts.pop(0)
            self._exemplars_np[slot, :-1] = self._exemplars_np[slot, 1:].copy()
        texts.append(text)
        self._exemplars_np[slot, len(texts) - 1] = np.asarray(vector)  # stored as float16
        self._sizes_np[slot] = len(texts)
        self.touched.add(slot)

    def _least_recent(self) -> int:
        seen = self.last_seen[: self.used].to(torch.float64) - 1e-6 * self.counts[: self.used]
        return int(torch.argmin(seen))

    def _remove(self, slot: int):
        """Swap-remove: the last used slot moves into `slot`."""
        last = self.used - 1
        if slot != last:
            for tensor in self._slot_tensors():
                tensor[slot] = tensor[last]
            self.texts[slot], self.domains[slot] = self.texts[last], self.domains[last]
        self.texts.pop()
        self.domains.pop()
        for tensor in self._slot_tensors():
            tensor[last] = 0
        self.touched.update((slot, last))
        self.used -= 1

    def _slot_tensors(self) -> tuple[torch.Tensor, ...]:
        return self.centroids, self.exemplar_vectors, self.counts, self.last_seen, self.sizes

    def refresh_sizes(self) -> None:
        """Recompute `sizes` from the texts (after loading a saved book)."""
        self.sizes.zero_()
        self.sizes[: self.used] = torch.tensor([len(t) for t in self.texts], dtype=torch.int64)

    def _absorb(self, keep: int, gone: int):
        """Fold slot `gone` into slot `keep` (gone is compacted away afterwards)."""
        total = int(self.counts[keep] + self.counts[gone])
        mean = (self.centroids[keep] * self.counts[keep] + self.centroids[gone] * self.counts[gone]) / total
        self.centroids[keep] = mean / mean.norm().clamp_min(1e-12)
        self.counts[keep] = total
        self.last_seen[keep] = max(int(self.last_seen[keep]), int(self.last_seen[gone]))
        self.domains[keep] = self.domains[keep] or self.domains[gone]
        for col, text in enumerate(self.texts[gone]):
            if text not in self.texts[keep]:
                self._add_exemplar(keep, self.exemplar_vectors[gone, col].to(self.dtype), text)

    def _compact(self, gone: set[int]):
        keep = [slot for slot in range(self.used) if slot not in gone]
        index = torch.tensor(keep, dtype=torch.int64)
        for tensor in self._slot_tensors():
            tensor[: len(keep)] = tensor[index].clone()
            tensor[len(keep) : self.used] = 0
        self.texts = [self.texts[slot] for slot in keep]
        self.domains = [self.domains[slot] for slot in keep]
        self.used = len(keep)

    def merge_similar(self, threshold: float, target_fill: float | None = None) -> int:
        """Merge slots whose centroids are at least `threshold` alike; if the book is still
        fuller than `target_fill`, keep merging the closest pairs until it is not.
        Works in rounds: one similarity matrix per round, disjoint pairs merged greedily."""
        merged = 0
        while self.used > 1:
            target = self.used if target_fill is None else int(target_fill * self.capacity)
            wanted = max(0, self.used - target)
            sims = self.centroids[: self.used] @ self.centroids[: self.used].T
            sims = torch.triu(sims, diagonal=1) - torch.tril(torch.full_like(sims, 4.0))
            top = torch.topk(sims.flatten(), min(sims.numel(), max(2 * wanted, 64)))
            gone: set[int] = set()
            for value, flat in zip(top.values.tolist(), top.indices.tolist()):
                if value < threshold and len(gone) >= wanted:
                    break
                i, j = divmod(flat, self.used)
                if i in gone or j in gone:
                    continue
                keep, drop = (i, j) if self.counts[i] >= self.counts[j] else (j, i)
                self._absorb(keep, drop)
                gone.add(drop)
            if not gone:
                break
            self._compact(gone)
            merged += len(gone)
        return merged

    def label(self, slot: int) -> str:
        """A slot's description: its most recent exemplar."""
        return self.texts[slot][-1]

    def exemplar_pairs(self, limit: int):
        """(vector, slot) of up to `limit` exemplars, most recently seen slots first."""
        order = torch.argsort(self.last_seen[: self.used], descending=True).tolist()
        out = []
        for slot in order:
            for col in range(len(self.texts[slot])):
                out.append((self.exemplar_vectors[slot, col].to(self.dtype), slot))
                if len(out) == limit:
                    return out
        return out


def nearest_of(slots: np.ndarray, sims: np.ndarray) -> tuple[int, int, float]:
    """The best (slot, exemplar, cosine) among scanned slots (k,) and their sims (k, per_slot)."""
    row, col = divmod(int(sims.argmax()), sims.shape[1])
    return int(slots[row]), col, float(sims[row, col])


def top_of(slots: np.ndarray, sims: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """Up to k best (slot, exemplar, cosine) triples, most similar first; empty places skipped."""
    flat = sims.ravel()
    k = min(k, int(np.isfinite(flat).sum()))
    best = np.argsort(-flat, kind="stable")[:k]
    return [(int(slots[i // sims.shape[1]]), int(i % sims.shape[1]), float(flat[i])) for i in best]


class ChunkLookup:
    """Nearest exemplars for a block of items that are written to the book one after another.

    All items are scored in one matmul against the book as it was when the block began (one
    pass over the centroids per block instead of per item, which is what makes batches fast).
    Slots written since then (reinforced, added, evicted, moved) are dropped from those scores
    and their current exemplars are appended to a small table of fresh rows (rows a slot held
    earlier in the block are marked dead), so an item still finds what earlier items of the same
    block stored. With one item per block this is exactly `PatternBook.nearest`. The per-item
    work is numpy on a few rows: torch's per-call overhead would dominate it.
    """

    def __init__(self, book: PatternBook, queries: torch.Tensor):
        self.book = book
        self.queries = queries.to(torch.float32).numpy()
        # Fresh rows: exemplars of slots written during the block, appended as they change.
        self.rows = np.empty((4 * book.per_slot, book.dim), dtype=np.float32)
        self.row_owner = np.empty((len(self.rows), 2), dtype=np.int64)  # (slot, exemplar)
        self.row_live = np.zeros(len(self.rows), dtype=bool)
        self.n_rows = 0
        self.rows_of_slot: dict[int, slice] = {}
        self.slots: np.ndarray | None = None
        self.sims: np.ndarray | None = None  # (n, k, per_slot) at block start; -inf = empty/stale
        book.touched.clear()
        if book.used:
            self.slots, self.sims = book.scan(queries, CANDIDATE_SLOTS)
            self.slots = np.array(self.slots)  # writable (a broadcast view is not)

    def _sync(self) -> None:
        """Take in the slots written since the last call."""
        book = self.book
        for slot in book.touched:
            if self.slots is not None:
                self.sims[self.slots == slot] = -math.inf  # what it held at block start is stale
            old = self.rows_of_slot.pop(slot, None)
            if old is not None:
                self.row_live[old] = False
            size = int(book._sizes_np[slot]) if slot < book.used else 0
            if size:
                self._append(slot, book._exemplars_np[slot, :size])
        book.touched.clear()

    def _append(self, slot: int, vectors: np.ndarray) -> None:
        start, end = self.n_rows, self.n_rows + len(vectors)
        if end > len(self.rows):  # grow by doubling
            grow = max(end, 2 * len(self.rows))
            self.rows = np.resize(self.rows, (grow, self.rows.shape[1]))
            self.row_owner = np.resize(self.row_owner, (grow, 2))
            self.row_live = np.concatenate([self.row_live[:start], np.zeros(grow - start, dtype=bool)])
        self.rows[start:end] = vectors  # float16 -> float32
        self.row_owner[start:end, 0] = slot
        self.row_owner[start:end, 1] = np.arange(len(vectors))
        self.row_live[start:end] = True
        self.rows_of_slot[slot] = slice(start, end)
        self.n_rows = end

    def nearest(self, index: int) -> tuple[int, int, float] | None:
        """(slot, exemplar, cosine) closest to queries[index] in the book as it is now."""
        if self.book.touched:
            self._sync()
        best = None
        if self.slots is not None:
            sims = self.sims[index]
            flat = int(sims.argmax())
            row, col = divmod(flat, sims.shape[1])
            if sims[row, col] > -math.inf:
                best = (int(self.slots[index, row]), col, float(sims[row, col]))
        if self.n_rows:
            n = self.n_rows
            cosines = np.where(self.row_live[:n], self.rows[:n] @ self.queries[index], -np.inf)
            at = int(cosines.argmax())
            if cosines[at] > -math.inf and (best is None or cosines[at] > best[2]):
                best = (int(self.row_owner[at, 0]), int(self.row_owner[at, 1]), float(cosines[at]))
        return best
