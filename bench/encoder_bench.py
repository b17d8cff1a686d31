"""Encoder benchmark (issue 13): the MiniLM runtimes side by side, in one process, interleaved.

    python -m bench.encoder_bench [--quick] [--json bench/results/encoder.json]

Speed: ms per text, single-sentence (batch 1) and batched (32, 64), with 1 and 2 intra-op
threads, for torch (transformers' BertModel, the reference), ONNX Runtime fp32 (the `minilm`
encoder), the same without length grouping, and ONNX Runtime int8 (`minilm-int8`). Rounds are
interleaved (every variant once per round) and the spread over rounds is reported: wall time
and the process's CPU time, which a busy shared machine disturbs less. Two text sets: the
docstring corpus (~15 tokens) and triples of it joined (~45 tokens).

Vectors: cosine of each encoder to sentence-transformers' torch model on the corpus, and
batched vs one-by-one. Recall: cue (first 4 words) -> fact, recall@1 among 512 facts by nearest
neighbour and through a NeuralMemory, per encoder; and the int8 familiarity calibration, mapped
from MiniLM's through a line fitted to pairwise cosines. First use: a fresh process encoding
one text with an empty cache (export included) and again with the cache filled.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.corpus import docstring_sentences
from bench.quality import cue, observe_all, recall_vs_nearest_neighbour
from memory import MemoryConfig, NeuralMemory
from memory import encoder_export as export
from memory.config import ENCODER_CALIBRATION
from memory.encoders import MiniLMEncoder

RESULTS = Path(__file__).with_name("results") / "encoder.json"


class TorchMiniLM(MiniLMEncoder):
    """The same tokenisation and length grouping, with transformers' BertModel doing the forward."""

    def __init__(self):
        super().__init__()
        self._model = export.torch_model("sdpa")
        self._session = self  # answers .run() like an ONNX Runtime session

    @torch.inference_mode()
    def run(self, _outputs, inputs: dict) -> list[np.ndarray]:
        return [self._model(*(torch.from_numpy(inputs[name]) for name in export.INPUTS)).numpy()]


def encoders(threads: int) -> dict:
    torch.set_num_threads(threads)  # torch's threads are per process; re-set before each torch run
    ungrouped = MiniLMEncoder(threads=threads)
    ungrouped.group = 1 << 30  # one padded batch, as the encoder ran before grouping
    return {"torch": TorchMiniLM(), "ort-fp32": MiniLMEncoder(threads=threads),
            "ort-fp32-ungrouped": ungrouped, "ort-int8": MiniLMEncoder(int8=True, threads=threads)}


def speed(texts: list[str], rounds: int, items: int) -> dict:
    variants = {threads: encoders(threads) for threads in (1, 2)}
    samples: dict = {}
    for _ in range(rounds):
        for threads, encs in variants.items():
            torch.set_num_threads(threads)
            for batch in (1, 32, 64):
                count = items // 4 if batch == 1 else items
                for name, enc in encs.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    for start in range(0, count, batch):
                        enc.encode(texts[start : start + batch])
                    key = f"{name} threads={threads} batch={batch}"
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    samples.setdefault(key, []).append((wall * 1000 / count, cpu * 1000 / count))
    return {key: _summary(values) for key, values in samples.items()}


def _summary(values: list[tuple[float, float]]) -> dict:
    spread = lambda x: {"median": float(np.median(x)), "min": float(x.min()), "max": float(x.max())}
    wall, cpu = np.array(values).T
    return {"wall_ms_per_text": spread(wall), "cpu_ms_per_text": spread(cpu)}


def vectors(texts: list[str]) -> dict:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(export.model_dir()), device="cpu")
    want = reference.encode(texts, batch_size=64, normalize_embeddings=True)
    out = {}
    for name, enc in {"minilm": MiniLMEncoder(), "minilm-int8": MiniLMEncoder(int8=True)}.items():
        got = enc.encode(texts)
        alone = np.stack([enc.encode([text])[0] for text in texts[:200]])
        cosines = (got * want).sum(1)
        out[name] = {"cosine_to_torch_min": float(cosines.min()),
                     "cosine_to_torch_mean": float(cosines.mean()),
                     "batched_vs_single_max_abs": float(np.abs(alone - got[:200]).max())}
    return out


def recall(facts: list[str]) -> dict:
    """Cue -> fact recall@1 among len(facts), per encoder, and the int8 calibration."""
    cues = [cue(fact) for fact in facts]
    out, embedded = {}, {}
    for name, enc in {"minilm": MiniLMEncoder(), "minilm-int8": MiniLMEncoder(int8=True)}.items():
        fact_vectors, cue_vectors = enc.encode(facts), enc.encode(cues)
        embedded[name] = np.concatenate([fact_vectors, cue_vectors])
        memory = NeuralMemory(MemoryConfig(encoder=name))  # its calibration; vectors are given
        observe_all(memory, facts, fact_vectors)
        out[name] = recall_vs_nearest_neighbour(memory, facts, fact_vectors, cue_vectors)
    out["int8_calibration"] = _calibration(embedded["minilm"], embedded["minilm-int8"])
    return out


def _calibration(fp32: np.ndarray, int8: np.ndarray) -> dict:
    """int8 cosine ~ slope * fp32 cosine + intercept over all pairs; MiniLM's familiarity
    midpoint and width mapped through it."""
    upper = np.triu_indices(len(fp32), k=1)
    x, y = (fp32 @ fp32.T)[upper], (int8 @ int8.T)[upper]
    slope, intercept = np.polyfit(x, y, 1)
    mid, width = ENCODER_CALIBRATION["minilm"]
    return {"pairs": len(x), "slope": float(slope), "intercept": float(intercept),
            "residual_std": float(np.std(y - (slope * x + intercept))),
            "mapped_mid": float(slope * mid + intercept), "mapped_width": float(slope * width)}


def first_use() -> dict:
    """Seconds for a fresh process to encode one text: empty cache (export), then filled cache."""
    script = ("import sys, time; t = time.perf_counter(); from memory import get_encoder; "
              "from memory.encoder_export import use_cache_dir; use_cache_dir(sys.argv[1]); "
              "get_encoder('{name}').encode(['hello']); print(time.perf_counter() - t)")
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for name in ("minilm", "minilm-int8"):
            for state in ("empty_cache", "cached"):
                done = subprocess.run([sys.executable, "-c", script.format(name=name), cache], env=env,
                                      capture_output=True, text=True, check=True)
                out[f"{name} {state}_s"] = float(done.stdout.split()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and texts")
    parser.add_argument("--json", default=str(RESULTS), help="write the figures here")
    args = parser.parse_args()
    corpus = list(docstring_sentences())
    rounds, items = (3, 64) if args.quick else (7, 128)
    triples = [" ".join(corpus[i : i + 3]) for i in range(0, 3 * items, 3)]
    tokenizer = MiniLMEncoder()._tokenizer
    tokens = lambda texts: float(np.mean([len(e.ids) for e in tokenizer.encode_batch(texts)]))
    report = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
              "mean_tokens": {"docstrings": tokens(corpus[:items]), "triples": tokens(triples)},
              "first_use": first_use(),
              "speed_docstrings": speed(corpus[:items], rounds, items),
              "speed_triples": speed(triples, rounds, items),
              "vectors": vectors(corpus[: 500 if args.quick else 2000]),
              "recall_512": recall(corpus[4000:4512])}
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
