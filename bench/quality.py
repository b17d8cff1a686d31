"""Quality measurements shared by the tests and the benchmark: seen-vs-unseen AUROC, recall
against exact nearest-neighbour search, retention with and without consolidation."""

from __future__ import annotations

import numpy as np
import torch

from memory import MemoryConfig, NeuralMemory


def auroc(negatives, positives) -> float:
    """P(a random positive scores higher than a random negative), ties counted half."""
    neg, pos = np.asarray(negatives, dtype=float), np.asarray(positives, dtype=float)
    scores = np.concatenate([neg, pos])
    ranks = scores.argsort().argsort().astype(float) + 1
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    pos_ranks = ranks[len(neg):]
    return float((pos_ranks.sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def observe_all(memory: NeuralMemory, texts: list[str], vectors: np.ndarray, batch: int = 64):
    for start in range(0, len(texts), batch):
        memory.observe_vectors(vectors[start : start + batch], texts[start : start + batch])


def surprise_scores(memory: NeuralMemory, vectors: np.ndarray) -> tuple[list[float], list[float]]:
    """(fused surprise, network-only surprise) for each vector, without learning."""
    fused = [memory.surprise_vector(v)["score"] for v in vectors]
    keys = memory._keys(vectors)
    neural = memory.net.neural_surprise(keys).tolist()
    return fused, neural


def seen_unseen_auroc(memory: NeuralMemory, seen: np.ndarray, unseen: np.ndarray) -> dict:
    """AUROC of surprise separating unseen (positive) from seen: fused, network, episodic store."""
    seen_f, seen_n = surprise_scores(memory, seen)
    unseen_f, unseen_n = surprise_scores(memory, unseen)
    episodic = lambda vs: [memory._episodic_surprise(memory.nearest(k)[1]) for k in memory._keys(vs)]
    return {"fused": auroc(seen_f, unseen_f), "network": auroc(seen_n, unseen_n),
            "episodic": auroc(episodic(seen), episodic(unseen))}


def cue(text: str, words: int = 4) -> str:
    return " ".join(text.split()[:words])


def recall_vs_nearest_neighbour(memory: NeuralMemory, facts: list[str], fact_vectors: np.ndarray,
                                cue_vectors: np.ndarray) -> dict:
    """Share of cues whose top `infer` pattern is the fact they came from, next to exact cosine
    nearest-neighbour search over all facts with the same encoder."""
    nn_hits = ((cue_vectors @ fact_vectors.T).argmax(1) == np.arange(len(facts))).mean()
    ours = 0
    for i, vector in enumerate(cue_vectors):
        attention = memory.infer_vector(vector, top_k=1)["attention_weights"]
        ours += bool(attention) and attention[0]["pattern"] == facts[i]
    keys = memory._keys(cue_vectors)
    with torch.no_grad():
        recalled = memory.net.recall(keys)  # the network alone: decode its answer over all facts
        contents = memory.net.values(memory._keys(fact_vectors))
    network = (recalled @ contents.T).argmax(1).numpy() == np.arange(len(facts))
    return {"memory": ours / len(facts), "nearest_neighbour": float(nn_hits),
            "network_only": float(network.mean())}


def retention(config: MemoryConfig, set_a: list[str], a_vecs, later: list[str], later_vecs,
              unseen_vecs, consolidate: bool) -> dict:
    """Learn A, (optionally consolidate), then learn 10x unrelated data; how well is A known?"""
    memory = NeuralMemory(config)
    observe_all(memory, set_a, a_vecs)
    if consolidate:
        memory.consolidate()
    observe_all(memory, later, later_vecs)
    fused, neural = surprise_scores(memory, a_vecs)
    _, neural_unseen = surprise_scores(memory, unseen_vecs)
    return {"fused_mean": float(np.mean(fused)), "network_mean": float(np.mean(neural)),
            "network_auroc": auroc(neural, neural_unseen)}
