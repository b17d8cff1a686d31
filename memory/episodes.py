"""Episodic store: every distinct text a memory observed, kept compactly and searchable forever.

Records get ids 0, 1, 2, ... in observation order. Each holds a unit vector (float16), the
text, the step at which it was stored, a domain id and its pattern (the id of the record that
founded its pattern, see `memory.patterns`). Nothing is ever evicted or rewritten.

Records fill an *open* segment, which is searched exactly (float32 brute force). Every
`segment_size` records the open segment is *sealed*: its records plus a usearch HNSW graph
over them become one immutable part (`Segment`), never changed again, and later searched
through the graph (approximate, `search_breadth` = HNSW ef). The graph is built by a background
thread while the segment fills (one insert at a time in id order, one thread, fixed parameters,
so the graph is a pure function of the records: a replayed memory seals the same bytes); the
sealing observation waits for it. Answers never depend on the builder's progress, because the
open segment is always searched exactly. A sealed segment's index is a usearch *view* of its
part's bytes: the part is the only copy in RAM.

Measured alternatives (bench/results/memory.json, "index_libraries"): faiss-cpu's HNSW and
hnswlib; usearch stores float16, views serialized bytes without a copy, and releases the GIL
while it inserts.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque

import numpy as np
from usearch.index import Index

from memory import codec
from memory.errors import IncompatibleState

CONNECTIVITY = 16  # HNSW M: links per node per layer
EXPANSION_ADD = 64  # HNSW ef while building
CHUNKS_PER_SEGMENT = 16  # an open segment is persisted in immutable chunks of segment_size/16
SLACK = 4  # extra candidates per segment, so near-ties are settled by the exact score


def new_index(dim: int, breadth: int) -> Index:
    return Index(ndim=dim, metric="ip", dtype="f16", connectivity=CONNECTIVITY,
                 expansion_add=EXPANSION_ADD, expansion_search=breadth)


class IndexBuilder:
    """Inserts records into an HNSW index on a background thread, in the order they were given."""

    def __init__(self, dim: int, breadth: int):
        self.index = new_index(dim, breadth)
        self._pending: deque[tuple[int, np.ndarray]] = deque()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._done = threading.Condition(self._lock)

    def add(self, key: int, vector: np.ndarray) -> None:
        with self._lock:
            self._pending.append((key, vector))
            if self._worker is None:
                self._worker = threading.Thread(target=self._drain, name="hnsw-builder", daemon=True)
                self._worker.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._worker = None  # exits; the next add starts a new worker
                    self._done.notify_all()
                    return
                batch = list(self._pending)
                self._pending.clear()
            keys = np.array([k for k, _ in batch], dtype=np.uint64)
            self.index.add(keys, np.stack([v for _, v in batch]), threads=1)  # releases the GIL

    def finish(self) -> Index:
        with self._lock:
            while self._worker is not None:
                self._done.wait()
        return self.index


class Segment:
    """Records [start, start + count), sealed: immutable, searched through their HNSW graph."""

    def __init__(self, part: bytes, breadth: int):
        fields, arrays = codec.unpack(part, "segment")
        self.part = part  # the arrays and the index view read these bytes: keep them alive
        self.start, self.count = fields["start"], fields["count"]
        self.index = Index.restore(arrays["index"], view=True)
        self.index.expansion_search = breadth
        self.text_bytes, self.text_ends = arrays["text_bytes"], arrays["text_ends"]
        self.steps, self.domains, self.patterns = arrays["steps"], arrays["domains"], arrays["patterns"]

    @staticmethod
    def pack(start: int, index: Index, columns: dict) -> bytes:
        return codec.pack("segment", {"start": start, "count": len(columns["steps"])},
                          {"index": np.frombuffer(index.save(), dtype=np.uint8), **columns})

    def text(self, row: int) -> str:
        begin = int(self.text_ends[row - 1]) if row else 0
        return bytes(self.text_bytes[begin : int(self.text_ends[row])]).decode("utf-8")

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.index.get(ids.astype(np.uint64), dtype=np.float32)).reshape(len(ids), -1)

    def candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Record ids (n, k) the graph finds closest to each query; -1 where it has fewer."""
        found = self.index.search(queries, k, threads=1)
        keys = np.full((len(queries), k), -1, dtype=np.int64)
        if len(queries) == 1:  # usearch answers a single query with unpadded 1-d Matches
            keys[0, : len(found.keys)] = found.keys
        else:
            keys[:] = found.keys
            keys[np.arange(k)[None, :] >= found.counts[:, None]] = -1
        return keys


class OpenSegment:
    """Records being gathered: growable float32 rows (float16-rounded), searched exactly."""

    def __init__(self, start: int, capacity: int, dim: int, breadth: int):
        self.start, self.capacity, self.count = start, capacity, 0
        self.vectors = np.zeros((min(capacity, 256), dim), dtype=np.float32)
        self.steps = np.zeros(capacity, dtype=np.int64)
        self.domains = np.zeros(capacity, dtype=np.int32)
        self.patterns = np.zeros(capacity, dtype=np.int64)
        self.texts: list[str] = []
        self.builder = IndexBuilder(dim, breadth)

    def append(self, vector: np.ndarray, text: str, step: int, domain: int, pattern: int) -> None:
        row = self.count
        if row == len(self.vectors):  # grow by doubling; readers keep the old array
            grown = np.zeros((min(2 * row, self.capacity), self.vectors.shape[1]), dtype=np.float32)
            grown[:row] = self.vectors
            self.vectors = grown
        self.vectors[row] = vector.astype(np.float16)
        self.steps[row], self.domains[row], self.patterns[row] = step, domain, pattern
        self.texts.append(text)
        self.count = row + 1  # last: a concurrent reader sees the row only once it is complete
        self.builder.add(self.start + row, self.vectors[row].copy())

    def columns(self, begin: int, end: int) -> dict[str, np.ndarray]:
        """Rows [begin, end) in the layout of a part (texts as one UTF-8 blob plus ends)."""
        encoded = [t.encode("utf-8") for t in self.texts[begin:end]]
        return {"text_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8),
                "text_ends": np.cumsum([len(e) for e in encoded], dtype=np.int64),
                "steps": self.steps[begin:end], "domains": self.domains[begin:end],
                "patterns": self.patterns[begin:end]}

    def load(self, vectors, text_bytes, text_ends, steps, domains, patterns) -> None:
        """Append rows from a persisted chunk (see `columns`)."""
        begin = 0
        for row, end in enumerate(text_ends.tolist()):
            text = bytes(text_bytes[begin:end]).decode("utf-8")
            self.append(vectors[row].astype(np.float32), text, int(steps[row]), int(domains[row]),
                        int(patterns[row]))
            begin = end

    def candidates(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Record ids (n, min(k, count)) closest to each query (float32 brute force)."""
        n = self.count
        sims = queries @ self.vectors[:n].T  # (q, n)
        k = min(k, n)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(np.arange(n), sims.shape)
        return top + self.start


class EpisodicStore:
    def __init__(self, dim: int, segment_size: int, breadth: int):
        self.dim, self.segment_size, self.breadth = dim, segment_size, breadth
        # (sealed segments, open segment), swapped as one: a reader sees before or after a seal
        self._view: tuple[list[Segment], OpenSegment] = ([], OpenSegment(0, segment_size, dim, breadth))

    @property
    def segments(self) -> list[Segment]:
        return self._view[0]

    @property
    def open(self) -> OpenSegment:
        return self._view[1]

    @property
    def size(self) -> int:
        open_ = self.open
        return open_.start + open_.count

    # ---- writes ----------------------------------------------------------------------------
    def append(self, vector: np.ndarray, text: str, step: int, domain: int, pattern: int | None) -> int:
        """Store one record; returns its id. `pattern` None: the record founds its own."""
        record = self.size
        self.open.append(vector, text, step, domain, record if pattern is None else pattern)
        if self.open.count == self.segment_size:
            self._seal()
        return record

    def _seal(self) -> None:
        done = self.open
        index = done.builder.finish()
        part = Segment.pack(done.start, index, done.columns(0, done.count))
        self._view = (self.segments + [Segment(part, self.breadth)],
                      OpenSegment(done.start + done.count, self.segment_size, self.dim, self.breadth))

    # ---- reads -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar records to each query (n, dim): ids (n, k), closest first (ties:
        lower id first), and cosines (float64); id -1 and -inf where the store holds fewer.

        Each segment proposes k + SLACK candidates (sealed: its HNSW graph; open: float32
        brute force); all are then scored by `exact_cosines`, so a record's score is the same
        whichever way it was found (a batch and its items one by one agree bit for bit)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        segments, open_ = self._view
        found = [segment.candidates(queries, k + SLACK) for segment in segments]
        if open_.count:
            found.append(open_.candidates(queries, k + SLACK))
        ids = np.concatenate(found, axis=1) if found else np.zeros((len(queries), 0), dtype=np.int64)
        sims = np.full(ids.shape, -np.inf)
        valid = ids >= 0
        rows = np.nonzero(valid)[0]
        sims[valid] = exact_cosines(self.vectors(ids[valid]), queries[rows])
        order = np.lexsort((np.where(valid, ids, np.iinfo(np.int64).max), -sims), axis=-1)[:, :k]
        ids, sims = np.take_along_axis(ids, order, axis=1), np.take_along_axis(sims, order, axis=1)
        ids[~np.isfinite(sims)] = -1
        if ids.shape[1] < k:  # fewer candidates than k
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids, sims

    def nearest_since(self, query: np.ndarray, since: int) -> tuple[int, float] | None:
        """The record most similar to `query` among ids >= since (for items of a batch that
        came after its shared search), scored like `search` scores."""
        if since >= self.size:
            return None
        ids = np.arange(since, self.size)
        sims = exact_cosines(self.vectors(ids), np.broadcast_to(query.astype(np.float32), (len(ids), len(query))))
        best = int(np.argmax(sims))
        return since + best, float(sims[best])

    def _locate(self, record: int) -> tuple[Segment | OpenSegment, int]:
        segments, open_ = self._view
        if record >= open_.start:
            return open_, record - open_.start
        segment = segments[bisect.bisect_right([s.start for s in segments], record) - 1]
        return segment, record - segment.start

    def text(self, record: int) -> str:
        where, row = self._locate(record)
        return where.texts[row] if isinstance(where, OpenSegment) else where.text(row)

    def pattern(self, record: int) -> int:
        where, row = self._locate(record)
        return int(where.patterns[row])

    def vectors(self, ids) -> np.ndarray:
        """(len(ids), dim) float32 rows for record ids, in the given order."""
        ids = np.asarray(ids, dtype=np.int64)
        segments, open_ = self._view
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        in_open = ids >= open_.start
        out[in_open] = open_.vectors[ids[in_open] - open_.start]
        starts = np.array([s.start for s in segments], dtype=np.int64)
        owner = np.searchsorted(starts, ids, side="right") - 1
        for at in np.unique(owner[~in_open]):
            pick = ~in_open & (owner == at)
            out[pick] = segments[at].vectors(ids[pick])
        return out

    # ---- persistence -----------------------------------------------------------------------
    @property
    def chunk_size(self) -> int:
        return max(1, self.segment_size // CHUNKS_PER_SEGMENT)

    def parts(self) -> dict[str, bytes]:
        """Immutable parts: every sealed segment and every full chunk of the open segment."""
        parts = {segment_name(s.start): s.part for s in self.segments}
        open_, size = self.open, self.chunk_size
        for begin in range(0, open_.count - open_.count % size, size):
            parts[chunk_name(open_.start + begin)] = self._chunk(begin, begin + size)
        return parts

    def _chunk(self, begin: int, end: int) -> bytes:
        columns = self.open.columns(begin, end)
        return codec.pack("chunk", {"start": self.open.start + begin},
                          {"vectors": self.open.vectors[begin:end].astype(np.float16), **columns})

    def tail(self) -> dict[str, np.ndarray]:
        """The open segment's rows after its last full chunk (they go into the head part)."""
        begin = self.open.count - self.open.count % self.chunk_size
        return {"vectors": self.open.vectors[begin : self.open.count].astype(np.float16),
                **self.open.columns(begin, self.open.count)}

    def manifest(self) -> dict:
        return {"size": self.size, "segments": [s.start for s in self.segments],
                "open_start": self.open.start}

    @classmethod
    def restore(cls, dim: int, segment_size: int, breadth: int, manifest: dict, parts,
                tail: dict[str, np.ndarray]) -> "EpisodicStore":
        store = cls(dim, segment_size, breadth)
        store._view = ([Segment(bytes_of(parts, segment_name(start)), breadth) for start in manifest["segments"]],
                       OpenSegment(manifest["open_start"], segment_size, dim, breadth))
        size = store.chunk_size
        full_end = manifest["size"] - (manifest["size"] - manifest["open_start"]) % size
        for begin in range(manifest["open_start"], full_end, size):
            _, arrays = codec.unpack(bytes_of(parts, chunk_name(begin)), "chunk")
            store.open.load(**arrays)
        store.open.load(**tail)
        if store.size != manifest["size"]:
            raise IncompatibleState(f"episodic store holds {store.size} records, "
                                          f"its manifest says {manifest['size']}")
        return store


def exact_cosines(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row-wise dot products in float64: every product of a float16-valued row entry and a
    float32 query entry is exact there, and the sum's order depends only on the length, so a
    (record, query) pair always scores the same bits."""
    return (rows.astype(np.float64) * queries.astype(np.float64)).sum(axis=1)


def segment_name(start: int) -> str:
    return f"segment/{start:012d}"


def chunk_name(start: int) -> str:
    return f"chunk/{start:012d}"


def bytes_of(parts, name: str) -> bytes:
    if name not in parts:
        raise IncompatibleState(f"memory state is missing its part {name!r}")
    return parts[name]
