"""The gateway's encode coalescing, driven by the real hashing encoder (no Ray needed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from errors import InvalidInput
from memory import get_encoder
from serve.encode_batcher import EncodeBatcher


class CountingEncoder:
    """The real `hash` encoder behind the batcher's call signature, counting the calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def __call__(self, encoder: str, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        await asyncio.sleep(0.01)  # a call takes time, so later requests pile up behind it
        return get_encoder(encoder).encode(texts)


def test_concurrent_requests_share_calls_and_get_their_own_vectors():
    backend = CountingEncoder()
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(40)]

    async def run() -> list[np.ndarray]:
        batcher = EncodeBatcher(backend, max_batch=16, max_in_flight=2)
        return await asyncio.gather(*(batcher.encode("hash", t) for t in texts))

    vectors = asyncio.run(run())
    expected = get_encoder("hash").encode(texts)
    for got, want in zip(vectors, expected):
        np.testing.assert_array_equal(got, want)
    assert sum(backend.calls) == 40
    assert len(backend.calls) < 40 and max(backend.calls) <= 16


def test_a_lone_request_is_sent_at_once():
    backend = CountingEncoder()

    async def run() -> None:
        batcher = EncodeBatcher(backend)
        for i in range(3):
            await batcher.encode("hash", f"text {i}")

    asyncio.run(run())
    assert backend.calls == [1, 1, 1]


def test_failures_reach_every_waiter_and_the_batcher_recovers():
    backend = CountingEncoder()

    async def run() -> None:
        batcher = EncodeBatcher(backend, max_in_flight=1)
        results = await asyncio.gather(*(batcher.encode("nope", f"t{i}") for i in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, InvalidInput) for r in results)
        assert (await batcher.encode("hash", "still works")).shape == (384,)

    asyncio.run(run())


def test_local_encoder_batches_in_process_and_isolates_unknown_names():
    from serve.encoder import LocalEncoder

    local = LocalEncoder(preload=["hash"])
    texts = [f"fact {i} about the gateway" for i in range(24)]

    async def run():
        batcher = EncodeBatcher(local.encode_batch, max_batch=8, max_in_flight=1)
        good = asyncio.gather(*(batcher.encode("hash", t) for t in texts))
        bad = batcher.encode("no-such-encoder", "x")
        return await good, await asyncio.gather(bad, return_exceptions=True)

    try:
        vectors, (error,) = asyncio.run(run())
    finally:
        local.close()
    np.testing.assert_allclose(np.stack(vectors), get_encoder("hash").encode(texts), atol=1e-6)
    assert isinstance(error, InvalidInput) and "no-such-encoder" in str(error)


def test_local_encoder_makes_one_minilm_session_per_process_with_its_threads():
    """NMEM_ENCODER_THREADS reaches ONNX Runtime, and a second replica object in the process
    reuses the session (fresh process: the thread count is fixed when the session is made)."""
    script = """
import asyncio, json
from memory import get_encoder
from serve.encoder import LocalEncoder
first = LocalEncoder(["minilm"], threads=2)
session = get_encoder("minilm")._session
second = LocalEncoder(["minilm"], threads=2)
texts = ["Redis is an in-memory database"]
got = asyncio.run(second.encode_batch("minilm", texts))
print(json.dumps({"threads": session.get_session_options().intra_op_num_threads,
                  "same_session": get_encoder("minilm")._session is session,
                  "same_vectors": bool((got == get_encoder("minilm").encode(texts)).all())}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"threads": 2, "same_session": True,
                                                        "same_vectors": True}
