"""Episodic store: every distinct text a memory observed, kept compactly and searchable forever.

Records get ids 0, 1, 2, ... in observation order. Each holds a unit vector (float16), the
text, the step at which it was stored, a domain id and its pattern (the id of the record that
founded its pattern, see `memory.patterns`). Nothing is evicted; only an explicit `erase` (the
approximate mode of forgetting, `memory.unlearn`) turns records into tombstones: zero vector,
empty text (never an observable text), never found again. Ids stay put, so only the chunks
holding erased records get new contents, under a new revision of their name
(`chunk/<start>.r<n>`): a part name still always means the same bytes.

Records are appended to a *tail*; every `episode_chunk` records the tail becomes an immutable
chunk (one state part, never changed again; its arrays are zero-copy views of the part's bytes,
so the part is the only copy in RAM).

Search is two-stage. A faiss `IndexBinaryFlat` holds the sign bits of every vector (48 bytes
for 384 dims) and scans them all by Hamming distance (SIMD popcount) for a shortlist; the
shortlist is then ranked by the exact cosine with the stored float16 vectors. Measured on the
scale benchmark's 100k real facts with reworded cues (bench/results/memory.json,
"index_libraries"): the exact nearest neighbour comes first for 99.3 % of cues at ~0.5 ms per
query; HNSW graphs (usearch, faiss, hnswlib) manage 92 % at 0.2-0.3 ms as one graph, 98.8 % at
3-8 ms as one graph per 8k-record segment — and a growing graph cannot be persisted in
immutable parts (every insert rewires old nodes). The scan needs no build and is a pure
function of the records, so a replayed memory answers bit for bit alike. Its cost grows
linearly (extrapolated: ~6 ms per query at a million records).
"""

from __future__ import annotations

import threading

import faiss
import numpy as np
import torch

from memory import codec
from memory.decoded import DecodedParts
from memory.errors import IncompatibleState

faiss.omp_set_num_threads(1)  # like torch: one thread per memory actor; scans are memory-bound
SLACK = 4  # shortlist at least k + SLACK, so near-ties are settled by the exact score


class Chunk:
    """Records [start, start + count): immutable; arrays view the bytes of its part."""

    def __init__(self, part: bytes):
        fields, arrays = codec.unpack(part, "chunk")
        self.part = part  # the arrays view these bytes: keep them alive
        self.start, self.count = fields["start"], len(arrays["steps"])
        self.vectors, self.text_bytes, self.text_ends = arrays["vectors"], arrays["text_bytes"], arrays["text_ends"]
        self.steps, self.domains, self.patterns = arrays["steps"], arrays["domains"], arrays["patterns"]
        self.codes = signs(self.vectors)  # for the store's binary index, computed once

    def text(self, row: int) -> str:
        begin = int(self.text_ends[row - 1]) if row else 0
        return bytes(self.text_bytes[begin : int(self.text_ends[row])]).decode("utf-8")

    def empty_rows(self) -> list[int]:
        """Ids of the tombstones (an observed text is never empty)."""
        lengths = np.diff(np.asarray(self.text_ends, dtype=np.int64), prepend=0)
        return (self.start + np.nonzero(lengths == 0)[0]).tolist()

    def without(self, rows: list[int]) -> "Chunk":
        """This chunk with `rows` turned into tombstones (a new part: zero vector, no text)."""
        texts = ["" if row in rows else self.text(row) for row in range(self.count)]
        vectors = np.array(self.vectors)
        vectors[rows] = 0
        encoded = [t.encode("utf-8") for t in texts]
        columns = {"vectors": vectors, "text_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8),
                   "text_ends": np.cumsum([len(e) for e in encoded], dtype=np.int64),
                   "steps": self.steps, "domains": self.domains, "patterns": self.patterns}
        return Chunk(codec.pack("chunk", {"start": self.start}, columns))


# Chunks this process decoded (memory.decoded): mostly the same bytes objects as the checkpoint
# store's chunk cache holds (64 MB by default). A Chunk is immutable, so memories share one.
DECODED: DecodedParts[Chunk] = DecodedParts(Chunk, 64 * 1024 * 1024)


class Tail:
    """Records after the last full chunk: preallocated rows, written in place."""

    def __init__(self, start: int, capacity: int, dim: int):
        self.start, self.count = start, 0
        self.vectors = np.zeros((capacity, dim), dtype=np.float16)
        self.steps = np.zeros(capacity, dtype=np.int64)
        self.domains = np.zeros(capacity, dtype=np.int32)
        self.patterns = np.zeros(capacity, dtype=np.int64)
        self.texts: list[str] = []

    def append(self, vector: np.ndarray, text: str, step: int, domain: int, pattern: int) -> None:
        row = self.count
        self.vectors[row] = vector
        self.steps[row], self.domains[row], self.patterns[row] = step, domain, pattern
        self.texts.append(text)
        self.count = row + 1  # last: a concurrent reader sees the row only once it is complete

    def load(self, columns: dict[str, np.ndarray]) -> None:
        """Fill an empty tail with rows in the layout of `columns()` (a saved state's tail)."""
        n, blob, ends = len(columns["steps"]), bytes(columns["text_bytes"]), columns["text_ends"].tolist()
        self.vectors[:n], self.steps[:n] = columns["vectors"], columns["steps"]
        self.domains[:n], self.patterns[:n] = columns["domains"], columns["patterns"]
        self.texts = [blob[begin:end].decode("utf-8") for begin, end in zip([0, *ends[:-1]], ends)]
        self.count = n

    def columns(self) -> dict[str, np.ndarray]:
        """The rows in the layout of a part (texts as one UTF-8 blob plus end offsets)."""
        encoded = [t.encode("utf-8") for t in self.texts[: self.count]]
        n = self.count
        return {"vectors": self.vectors[:n], "text_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8),
                "text_ends": np.cumsum([len(e) for e in encoded], dtype=np.int64),
                "steps": self.steps[:n], "domains": self.domains[:n], "patterns": self.patterns[:n]}

    def text(self, row: int) -> str:
        return self.texts[row]

    def empty_rows(self) -> list[int]:
        return [self.start + row for row, text in enumerate(self.texts[: self.count]) if not text]


class EpisodicStore:
    def __init__(self, dim: int, chunk: int, shortlist: int):
        self.dim, self.chunk, self.shortlist = dim, chunk, shortlist
        # (full chunks, tail), swapped as one: a reader sees before or after a chunk fills
        self._view: tuple[list[Chunk], Tail] = ([], Tail(0, chunk, dim))
        self._codes = faiss.IndexBinaryFlat(dim)  # sign bits of every record, in id order
        self._lock = threading.Lock()  # faiss: no search while an add reallocates its codes
        self.erased: frozenset[int] = frozenset()  # tombstones (see `erase`), swapped whole
        self.revisions: dict[int, int] = {}  # chunk start -> revision of its part (erasures)

    @property
    def chunks(self) -> list[Chunk]:
        return self._view[0]

    @property
    def tail(self) -> Tail:
        return self._view[1]

    @property
    def size(self) -> int:
        """Ids handed out so far (tombstones included)."""
        return self._codes.ntotal

    @property
    def live(self) -> int:
        """Records that can be found (size minus tombstones)."""
        return self.size - len(self.erased)

    # ---- writes ----------------------------------------------------------------------------
    def append(self, vector: np.ndarray, text: str, step: int, domain: int, pattern: int | None) -> int:
        """Store one record (unit vector, float32); returns its id. `pattern` None: the record
        founds its own."""
        record = self.tail.start + self.tail.count
        row = vector.astype(np.float16)
        self.tail.append(row, text, step, domain, record if pattern is None else pattern)
        with self._lock:
            self._codes.add(signs(row[None]))
        if self.tail.count == self.chunk:
            part = codec.pack("chunk", {"start": self.tail.start}, self.tail.columns())
            self._view = (self.chunks + [Chunk(part)], Tail(record + 1, self.chunk, self.dim))
        return record

    def erase(self, records) -> None:
        """Turn `records` into tombstones: zero vector, empty text, never found again. Each
        chunk holding one is packed anew under its next revision; the tail is edited in place."""
        doomed = sorted(set(int(r) for r in records) - self.erased)
        if not doomed:
            return
        chunks, tail = list(self.chunks), self.tail
        by_chunk: dict[int, list[int]] = {}
        for record in doomed:
            if record >= tail.start:
                tail.vectors[record - tail.start] = 0
                tail.texts[record - tail.start] = ""
            else:
                by_chunk.setdefault(record // self.chunk, []).append(record % self.chunk)
        for index, rows in by_chunk.items():
            chunks[index] = chunks[index].without(rows)
            self.revisions[chunks[index].start] = self.revisions.get(chunks[index].start, 0) + 1
        self.erased = self.erased | frozenset(doomed)
        self._view = (chunks, tail)
        with self._lock:  # the tombstones' codes become all-zero like their vectors
            self._codes.reset()
            for c in chunks:
                self._codes.add(c.codes)
            self._codes.add(signs(tail.vectors[: tail.count]))

    # ---- reads -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, shortlist: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar records to each query (n, dim): ids (n, k), closest first (ties:
        lower id first), and exact cosines (float64); -1 and -inf where the store has fewer.
        `shortlist`: how many pass the sign-bit scan (default: the store's)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        shortlist = max(shortlist or self.shortlist, k + SLACK)
        with self._lock:
            size = self.size
            if not size:
                return np.full((len(queries), k), -1), np.full((len(queries), k), -np.inf)
            _, ids = self._codes.search(signs(queries), min(size, shortlist))
        sims = np.full(ids.shape, -np.inf)
        valid = ids >= 0
        if self.erased:
            valid &= ~np.isin(ids, list(self.erased))
        sims[valid] = exact_cosines(self.vectors(ids[valid]), queries[np.nonzero(valid)[0]])
        return _best(ids.astype(np.int64), sims, k)

    def _locate(self, record: int):
        chunks, tail = self._view
        if record >= tail.start:
            return tail, record - tail.start
        return chunks[record // self.chunk], record % self.chunk

    def text(self, record: int) -> str:
        where, row = self._locate(record)
        return where.text(row)

    def pattern(self, record: int) -> int:
        where, row = self._locate(record)
        return int(where.patterns[row])

    def step(self, record: int) -> int:
        """The memory's step when the record was stored (a text seen again keeps its first)."""
        where, row = self._locate(record)
        return int(where.steps[row])

    def records(self):
        """(id, text, step, domain id) of every live record, in id order."""
        chunks, tail = self._view
        for where in [*chunks, tail]:
            for row in range(where.count):
                record = where.start + row
                if record not in self.erased:
                    yield record, where.text(row), int(where.steps[row]), int(where.domains[row])

    def vectors(self, ids) -> np.ndarray:
        """(len(ids), dim) float32 rows for record ids, in the given order."""
        ids = np.asarray(ids, dtype=np.int64)
        chunks, tail = self._view
        rows = np.empty((len(ids), self.dim), dtype=np.float16)  # gathered as stored, widened at once
        in_tail = ids >= tail.start
        rows[in_tail] = tail.vectors[ids[in_tail] - tail.start]
        if not in_tail.all():
            owner, row = np.divmod(ids[~in_tail], self.chunk)
            rows[~in_tail] = _gather(chunks, owner, row)
        return widen(rows)

    # ---- persistence -----------------------------------------------------------------------
    def parts(self) -> dict[str, bytes]:
        """Immutable parts: every full chunk (the tail goes into the head part)."""
        return {chunk_name(c.start, self.revisions.get(c.start, 0)): c.part for c in self.chunks}

    def tail_columns(self) -> dict[str, np.ndarray]:
        return self.tail.columns()

    def manifest(self) -> dict:
        manifest = {"size": self.size, "chunks": len(self.chunks)}
        if self.revisions:  # only after an erasure, so older states keep their exact bytes
            manifest["revisions"] = [[start, rev] for start, rev in sorted(self.revisions.items())]
        return manifest

    @classmethod
    def restore(cls, dim: int, chunk: int, shortlist: int, manifest: dict, parts,
                tail: dict[str, np.ndarray]) -> "EpisodicStore":
        store = cls(dim, chunk, shortlist)
        store.revisions = {int(start): int(rev) for start, rev in manifest.get("revisions", [])}
        chunks = [DECODED.get(bytes_of(parts, chunk_name(i * chunk, store.revisions.get(i * chunk, 0))))
                  for i in range(manifest["chunks"])]
        store._view = (chunks, Tail(len(chunks) * chunk, chunk, dim))
        store.tail.load(tail)
        for c in store.chunks:
            store._codes.add(c.codes)
        store._codes.add(signs(store.tail.vectors[: store.tail.count]))
        store.erased = frozenset(r for c in [*store.chunks, store.tail] for r in c.empty_rows())
        if store.size != manifest["size"]:
            raise IncompatibleState(f"episodic store holds {store.size} records, its manifest "
                                    f"says {manifest['size']}")
        return store


class BlockRecords:
    """The records one block of a batch adds to the store, for the block's later items: each
    item's nearest among them, scored exactly as `search` scores a stored record, without
    reading the store back. A record stored by item j *is* item j's query, rounded to float16
    as `EpisodicStore.append` rounds it, so the block's float64 copies are made once."""

    def __init__(self, queries: np.ndarray, first_id: int):
        self._block = queries
        self._queries = queries.astype(np.float32).astype(np.float64)
        self._first_id = first_id  # the id the block's first record gets
        self._kept = np.empty_like(self._queries)  # the rows stored so far, in id order
        self._count = 0
        self._products = np.empty_like(self._queries)  # scratch: no fresh pages per item

    def stored(self, item: int) -> None:
        """Item `item` of the block was just appended to the store (the next id)."""
        self._kept[self._count] = self._block[item].astype(np.float16)  # as the store keeps it
        self._count += 1

    def nearest(self, item: int) -> tuple[int, float] | None:
        """(id, cosine) of the record most like item `item` among those stored so far (ties:
        the lower id); None if none is."""
        if not self._count:
            return None
        n = self._count
        sims = exact_cosines(self._kept[:n], self._queries[item][None, :], out=self._products[:n])
        best = int(np.argmax(sims))
        return self._first_id + best, float(sims[best])


def signs(vectors: np.ndarray) -> np.ndarray:
    """The binary code of each row: its sign bits, packed (n, dim / 8)."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def _best(ids: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (id, sim) per row, highest sim first, ties by lower id; padded with -1/-inf."""
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -sims), axis=-1)[:, :k]
    ids, sims = np.take_along_axis(ids, order, axis=1), np.take_along_axis(sims, order, axis=1)
    ids = np.where(np.isfinite(sims), ids, -1)
    if ids.shape[1] < k:
        pad = ((0, 0), (0, k - ids.shape[1]))
        ids, sims = np.pad(ids, pad, constant_values=-1), np.pad(sims, pad, constant_values=-np.inf)
    return ids, sims


GROUP_GATHER_AT = 96  # rows of chunks from which grouping them by chunk beats a lookup per row


def _gather(chunks: list[Chunk], owner: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Float16 rows `row` of chunks `owner`, in the given order. A search gathers its whole
    shortlist (a block of 64 lookups: ~1,000 rows): one fancy index per chunk then costs about a
    quarter of a lookup per row (measured, 1,024 rows of 12 chunks: 0.17 vs 0.62 ms)."""
    if len(owner) < GROUP_GATHER_AT:
        return np.stack([chunks[o].vectors[r] for o, r in zip(owner.tolist(), row.tolist())])
    rows = np.empty((len(owner), chunks[0].vectors.shape[1]), dtype=np.float16)
    order = np.argsort(owner, kind="stable")
    owners = owner[order]
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]).tolist()
    for begin, end in zip(starts, [*starts[1:], len(order)]):
        picked = order[begin:end]
        rows[picked] = chunks[owners[begin]].vectors[row[picked]]
    return rows


def widen(half: np.ndarray) -> np.ndarray:
    """float16 -> float32 (exact). torch's conversion uses the CPU's half-float instructions:
    ~10x numpy's on this machine (1,024 rows of 384: 0.07 vs 0.65 ms)."""
    return torch.from_numpy(np.ascontiguousarray(half)).float().numpy()


def exact_cosines(rows: np.ndarray, queries: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise dot products in float64: every product of a float16-valued row entry and a
    float32 query entry is exact there, and the sum's order depends only on the length, so a
    (record, query) pair always scores the same bits. The ufunc casts as it goes: two float64
    copies of a large shortlist would be fresh pages, faulted in on every call (~6× slower).
    `out`: a float64 array of rows' shape for the products (scratch)."""
    return np.multiply(rows, queries, dtype=np.float64, out=out).sum(axis=1)


def chunk_name(start: int, revision: int = 0) -> str:
    return f"chunk/{start:012d}" + (f".r{revision}" if revision else "")


def bytes_of(parts, name: str) -> bytes:
    if name not in parts:
        raise IncompatibleState(f"memory state is missing its part {name!r}")
    return parts[name]
