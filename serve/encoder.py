"""Text -> vectors for every memory, batched across requests: the Encoder deployment, or
`LocalEncoder` inside each gateway replica (`encode_in`, see serve/settings.py).

One model per replica, loaded once (in the constructor, for the encoders named in
`preload`; any other known encoder on first use), never per memory actor. Concurrent calls
are gathered by `@serve.batch` into one forward pass per encoder name, which is where MiniLM
gets its throughput under load. The forward pass runs in a worker thread so the replica's
event loop keeps collecting the next batch meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from ray import serve

from errors import InvalidInput
from memory import check_encoder_name, get_encoder, use_cache_dir

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_S = 0.002


def check_preload(names: list[str]) -> None:
    """InvalidInput naming NMEM_PRELOAD_ENCODERS if it names an encoder there is not (before a
    deploy, whose replicas would fail to start with only Serve's words for it)."""
    for name in names:
        try:
            check_encoder_name(name)
        except InvalidInput as exc:
            raise InvalidInput(f"NMEM_PRELOAD_ENCODERS: {exc}") from None


def preload_encoders(names: list[str], cache_dir: Path | None = None) -> set[str]:
    """Load each named encoder and run one forward pass (it allocates) before any traffic;
    exported models are cached in `cache_dir` (None: the user's cache directory)."""
    use_cache_dir(cache_dir)
    for name in names:
        encoder = get_encoder(name)
        encoder.encode(["warm-up"])
        logger.info("encoder %s loaded (dim %d)", name, encoder.dim)
    return set(names)


@serve.deployment(name="Encoder", max_ongoing_requests=256, health_check_period_s=10)
class Encoder:
    def __init__(
        self,
        preload: list[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        cache_dir: Path | None = None,
    ) -> None:
        self._loaded = preload_encoders(preload or [], cache_dir)
        self._batch.set_max_batch_size(batch_size)
        self._batch.set_batch_wait_timeout_s(batch_wait_s)

    async def encode(self, encoder: str, text: str) -> np.ndarray:
        """One text with the named encoder -> (dim,) float32, unit length."""
        await self._load(encoder)
        return await self._batch((encoder, text))

    async def encode_batch(self, encoder: str, texts: list[str]) -> np.ndarray:
        """Several texts (one gateway's coalesced requests) -> (n, dim) float32."""
        await self._load(encoder)
        rows = await asyncio.gather(*(self._batch((encoder, text)) for text in texts))
        return np.stack(rows)

    async def _load(self, encoder: str) -> None:
        # Resolve the name before batching: an unknown name must fail alone (InvalidInput),
        # not take the whole batch of other callers down with it.
        if encoder not in self._loaded:
            await asyncio.to_thread(get_encoder, encoder)  # loads a model: keep the loop free
            self._loaded.add(encoder)

    @serve.batch(max_batch_size=DEFAULT_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def _batch(self, items: list[tuple[str, str]]) -> list[np.ndarray]:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, (name, _) in enumerate(items):
            groups[name].append(index)
        out: list[np.ndarray | None] = [None] * len(items)
        for name, indices in groups.items():
            texts = [items[i][1] for i in indices]
            vectors = await asyncio.to_thread(get_encoder(name).encode, texts)  # (n, dim)
            for row, index in enumerate(indices):
                out[index] = vectors[row]
        return out  # type: ignore[return-value]

    def check_health(self) -> None:
        """Serve restarts the replica if this raises; loading is checked in __init__."""


class LocalEncoder:
    """Encoding inside the gateway replica: no DeploymentHandle hop (on 2 cores that hop cost
    ~10 ms of CPU and latency per request). One forward pass at a time in one worker thread,
    so the event loop stays free; the gateway's EncodeBatcher coalesces concurrent requests
    into each pass, as the Encoder deployment's @serve.batch would."""

    def __init__(self, preload: list[str], threads: int = 0, cache_dir: Path | None = None) -> None:
        # The process's intra-op threads (Ray sets 1 for <1-CPU replicas): torch's, which the
        # ONNX Runtime session of each MiniLM encoder takes when preload creates it.
        if threads:
            torch.set_num_threads(threads)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._loaded = preload_encoders(preload, cache_dir)

    async def encode_batch(self, encoder: str, texts: list[str]) -> np.ndarray:
        """(n, dim) float32 for texts with the named encoder (InvalidInput if unknown)."""
        if encoder not in self._loaded:  # unknown names fail here, alone; loading stays off-loop
            await asyncio.get_running_loop().run_in_executor(self._pool, get_encoder, encoder)
            self._loaded.add(encoder)
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: get_encoder(encoder).encode(texts)
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
