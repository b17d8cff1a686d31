"""Vector-index libraries for the episodic store's sealed segments, measured on the same data.

One segment's worth of real MiniLM fact vectors (default 8,192), inserted one batch of 64 at a
time on one thread, as the store's background builder does; queried with the reworded cues
(k = 5, one query per call, as observe/infer query). Per library: insert and query time,
recall@1 against exact search, bytes per vector serialized, and whether two builds from the
same inserts give the same bytes (the store needs that: a replayed memory must seal identical
parts). usearch is a dependency; faiss-cpu and hnswlib are measured when installed
(`pip install faiss-cpu hnswlib`) and skipped otherwise.
"""

from __future__ import annotations

import hashlib
import pickle
import time

import numpy as np

M, EF_ADD, EF_SEARCH = 16, 64, 64  # the store's parameters (memory.episodes)


def _usearch(dim: int):
    from usearch.index import Index

    index = Index(ndim=dim, metric="ip", dtype="f16", connectivity=M, expansion_add=EF_ADD,
                  expansion_search=EF_SEARCH)
    add = lambda ids, x: index.add(ids.astype(np.uint64), x, threads=1)
    search = lambda q: index.search(q, 5, threads=1).keys
    return add, search, lambda: bytes(index.save())


def _faiss(dim: int):
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction, index.hnsw.efSearch = EF_ADD, EF_SEARCH
    index.train(np.zeros((1, dim), dtype=np.float32))  # fp16 needs no statistics
    add = lambda ids, x: index.add(x)  # ids are the insertion order
    search = lambda q: index.search(q[None], 5)[1][0]
    return add, search, lambda: faiss.serialize_index(index).tobytes()


def _hnswlib(dim: int, capacity: int):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=capacity, ef_construction=EF_ADD, M=M, random_seed=100)
    index.set_num_threads(1)
    index.set_ef(EF_SEARCH)
    add = lambda ids, x: index.add_items(x, ids)
    search = lambda q: index.knn_query(q, k=5)[0][0]
    return add, search, lambda: pickle.dumps(index)


LIBRARIES = {"usearch": _usearch, "faiss-cpu (IndexHNSWSQ fp16)": _faiss, "hnswlib (float32 only)": _hnswlib}


def _build(name: str, vectors: np.ndarray):
    make = LIBRARIES[name]
    add, search, save = make(vectors.shape[1], len(vectors)) if "hnswlib" in name else make(vectors.shape[1])
    start = time.perf_counter()
    for at in range(0, len(vectors), 64):
        add(np.arange(at, min(at + 64, len(vectors))), vectors[at : at + 64])
    return (time.perf_counter() - start) / len(vectors), search, save


def compare(vectors: np.ndarray, cues: np.ndarray) -> dict:
    exact = (cues @ vectors.T).argmax(1)
    out = {}
    for name in LIBRARIES:
        try:
            per_insert, search, save = _build(name, vectors)
        except ImportError:
            out[name] = "not installed"
            continue
        times, top = [], []
        for cue in cues:
            start = time.perf_counter()
            found = search(cue)
            times.append(time.perf_counter() - start)
            top.append(int(found[0]))
        blob = save()
        again = _build(name, vectors)[2]()
        out[name] = {"insert_ms": per_insert * 1e3, "query_p50_ms": float(np.median(times)) * 1e3,
                     "recall_at_1_vs_exact": float(np.mean(np.array(top) == exact)),
                     "bytes_per_vector": len(blob) / len(vectors),
                     "same_bytes_when_rebuilt": hashlib.sha256(blob).digest() == hashlib.sha256(again).digest()}
    return out
