"""Coalesce one gateway replica's concurrent encode requests into few Encoder calls.

Every DeploymentHandle call costs a few milliseconds of CPU in two processes, which on a
2-core machine caps throughput long before the encoder's matrix multiplies do. So each
gateway replica keeps at most `max_in_flight` Encoder calls per encoder name; requests that
arrive meanwhile wait and leave together in the next call. A lone request is sent at once
(no timer), so sequential latency is unchanged. The Encoder's `@serve.batch` still merges
the calls of several gateway replicas into one forward pass.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable

import numpy as np

BatchCall = Callable[[str, list[str]], Awaitable[np.ndarray]]  # (encoder, texts) -> (n, dim)


class EncodeBatcher:
    def __init__(self, call: BatchCall, max_batch: int = 32, max_in_flight: int = 2) -> None:
        self._call = call
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: dict[str, list[tuple[str, asyncio.Future]]] = defaultdict(list)
        self._in_flight: dict[str, int] = defaultdict(int)

    async def encode(self, encoder: str, text: str) -> np.ndarray:
        """(dim,) float32 for one text, sent alone or with the texts that arrived alongside."""
        return (await self.encode_many(encoder, [text]))[0]

    async def encode_many(self, encoder: str, texts: list[str]) -> np.ndarray:
        """(n, dim) float32 for `texts`, in order. They join the same queue as single texts (a
        batch is split into encoder batches of `max_batch`), so a big import and interactive
        calls share the encoder fairly instead of racing it."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in texts]
        self._pending[encoder].extend(zip(texts, futures))
        self._maybe_send(encoder)
        return np.stack(await asyncio.gather(*futures))

    def _maybe_send(self, encoder: str) -> None:
        while self._pending[encoder] and self._in_flight[encoder] < self._max_in_flight:
            batch = self._pending[encoder][: self._max_batch]
            del self._pending[encoder][: self._max_batch]
            self._in_flight[encoder] += 1
            asyncio.get_running_loop().create_task(self._send(encoder, batch))

    async def _send(self, encoder: str, batch: list[tuple[str, asyncio.Future]]) -> None:
        try:
            vectors = await self._call(encoder, [text for text, _ in batch])
        except BaseException as exc:  # every waiter gets the failure; nobody hangs
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for row, (_, future) in enumerate(batch):
                if not future.done():  # the caller may have been cancelled meanwhile
                    future.set_result(vectors[row])
        finally:
            self._in_flight[encoder] -= 1
            self._maybe_send(encoder)
