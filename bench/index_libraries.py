"""How the episodic store searches, and the alternatives it was chosen over, on the same data.

All records are the scale benchmark's real MiniLM fact vectors (100k by default); queries are
the reworded cues of a uniform 1,000 (one query per call, one thread, as observe/infer query).
Per method: query p50, how often its top answer is the exact nearest neighbour, and build
cost. The store's method (`memory.episodes`): a flat Hamming scan of sign bits (faiss
IndexBinaryFlat; usearch's exact b1 search for comparison) for a shortlist of 64, ranked by the
exact cosine. Against HNSW graphs from usearch, faiss-cpu and hnswlib (M 16, ef 64 to build),
one over all records and, for usearch, one per 8,192-record segment (the layout immutable
parts would need, since a growing graph rewires old nodes on every insert). faiss-cpu is a
dependency (the store uses it); hnswlib is measured when installed and skipped otherwise.
"""

from __future__ import annotations

import time

import numpy as np

from memory.episodes import exact_cosines, signs

M, EF = 16, 64
SHORTLIST = 64


def _hnsw_usearch(x, ef):
    from usearch.index import Index

    index = Index(ndim=x.shape[1], metric="ip", dtype="f16", connectivity=M, expansion_add=EF, expansion_search=ef)
    index.add(np.arange(len(x)), x, threads=1)
    return lambda q: [(int(k), 1 - float(d)) for k, d in zip(*(lambda m: (m.keys, m.distances))(index.search(q, 5, threads=1)))]


def _hnsw_faiss(x, ef):
    import faiss

    index = faiss.IndexHNSWSQ(x.shape[1], faiss.ScalarQuantizer.QT_fp16, M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction, index.hnsw.efSearch = EF, ef
    index.train(x[:1])
    index.add(x)
    return lambda q: [(int(i), float(s)) for s, i in zip(*(r[0] for r in index.search(q[None], 5)))]


def _hnsw_hnswlib(x, ef):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=x.shape[1])
    index.init_index(max_elements=len(x), ef_construction=EF, M=M, random_seed=100)
    index.set_num_threads(1)
    index.add_items(x, np.arange(len(x)))
    index.set_ef(ef)
    return lambda q: [(int(i), 1 - float(d)) for i, d in zip(*(r[0] for r in index.knn_query(q, k=5)))]


def _segments(build, x, ef, size=8192):
    parts = [(start, build(x[start : start + size], ef)) for start in range(0, len(x), size)]
    return lambda q: [(start + i, s) for start, search in parts for i, s in search(q)]


def _binary(scan_name: str, x):
    """The store's method: sign-bit shortlist, exact cosine ranking (float16 rows)."""
    rows, codes = x.astype(np.float16), signs(x)
    if scan_name == "faiss":
        import faiss

        index = faiss.IndexBinaryFlat(x.shape[1])
        index.add(codes)
        scan = lambda q: index.search(signs(q[None]), SHORTLIST)[1][0]
    else:
        from usearch.index import Index

        index = Index(ndim=x.shape[1], metric="hamming", dtype="b1")
        index.add(np.arange(len(x)), codes, threads=1)
        scan = lambda q: index.search(signs(q[None])[0], SHORTLIST, exact=True, threads=1).keys.astype(np.int64)
    def search(q):
        ids = scan(q)
        sims = exact_cosines(rows[ids].astype(np.float32), np.broadcast_to(q, (len(ids), len(q))))
        return list(zip(ids.tolist(), sims.tolist()))
    return search


METHODS = {
    "sign-bit scan (faiss IndexBinaryFlat) + exact rank: the store": lambda x: _binary("faiss", x),
    "sign-bit scan (usearch exact b1) + exact rank": lambda x: _binary("usearch", x),
    "HNSW usearch f16, one graph": lambda x: _hnsw_usearch(x, EF),
    "HNSW faiss fp16, one graph": lambda x: _hnsw_faiss(x, EF),
    "HNSW hnswlib f32, one graph": lambda x: _hnsw_hnswlib(x, EF),
    "HNSW usearch f16, 8192-record segments": lambda x: _segments(_hnsw_usearch, x, EF),
}


def compare(vectors: np.ndarray, cues: np.ndarray) -> dict:
    exact = (cues @ vectors.T).argmax(1)
    out = {"records": len(vectors), "queries": len(cues)}
    for name, make in METHODS.items():
        start = time.perf_counter()
        try:
            search = make(vectors)
        except ImportError:
            out[name] = "not installed"
            continue
        build_s = time.perf_counter() - start
        times, top = [], []
        for cue in cues:
            start = time.perf_counter()
            found = search(cue)
            times.append(time.perf_counter() - start)
            top.append(max(found, key=lambda f: f[1])[0])
        out[name] = {"query_p50_ms": float(np.median(times)) * 1e3, "build_s": build_s,
                     "top1_is_exact_nn": float(np.mean(np.array(top) == exact))}
    return out
