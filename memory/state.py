"""What of a `NeuralMemory` goes into its bytes, and how it comes back (see `memory.codec`)."""

from __future__ import annotations

from collections import Counter

import torch


def state_header(memory) -> dict:
    book = memory.book
    return {
        "kind": "neural-memory",
        "config": memory.config.to_dict(),
        "encoder": memory.config.encoder,
        "dim": memory.config.dim,
        "step": memory.step,
        "weight_hash": memory.weight_hash,
        "avg_surprise": memory.avg_surprise,
        "domain_counts": dict(memory.domain_counts),
        "book": {"used": book.used, "texts": book.texts, "domains": book.domains},
        "ewc": bool(memory.net.fisher),
    }


def state_tensors(memory) -> list[tuple[str, torch.Tensor]]:
    net, book, used = memory.net, memory.book, memory.book.used
    tensors = [(f"w{i}", p) for i, p in enumerate(net.params)]
    tensors += [(f"m{i}", p) for i, p in enumerate(net.momentum)]
    tensors += [(f"f{i}", p) for i, p in enumerate(net.fisher)]
    tensors += [(f"a{i}", p) for i, p in enumerate(net.anchor)]
    tensors += [("centroids", book.centroids[:used]), ("exemplars", book.exemplar_vectors[:used]),
                ("counts", book.counts[:used]), ("last_seen", book.last_seen[:used])]
    return tensors


def restore(memory, header: dict, tensors: dict[str, torch.Tensor]) -> None:
    net, book = memory.net, memory.book
    n = len(net.params)
    net.params = [tensors[f"w{i}"] for i in range(n)]
    net.momentum = [tensors[f"m{i}"] for i in range(n)]
    if header["ewc"]:
        net.fisher = [tensors[f"f{i}"] for i in range(n)]
        net.anchor = [tensors[f"a{i}"] for i in range(n)]
    used = header["book"]["used"]
    book.used = used
    book.centroids[:used] = tensors["centroids"]
    book.exemplar_vectors[:used] = tensors["exemplars"]
    book.counts[:used] = tensors["counts"]
    book.last_seen[:used] = tensors["last_seen"]
    book.texts = [list(t) for t in header["book"]["texts"]]
    book.domains = list(header["book"]["domains"])
    book.refresh_sizes()
    memory.step = header["step"]
    memory.avg_surprise = header["avg_surprise"]
    memory.domain_counts = Counter(header["domain_counts"])
    memory._hash = None
