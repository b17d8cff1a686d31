"""FairGate: a cap on concurrent starts, served round-robin across tenants (no Ray needed)."""

from __future__ import annotations

import asyncio

import pytest

from cluster.fairness import FairGate


async def _run_burst(gate: FairGate, requests: list[str]) -> list[str]:
    """Queue every request (in list order) before any slot frees up; return the order in
    which they got one."""
    order: list[str] = []
    go = asyncio.Event()

    async def one(label: str) -> None:
        async with gate.slot(label.split(":")[0]):
            order.append(label)
            await go.wait()

    tasks = [asyncio.create_task(one(label)) for label in requests]
    await asyncio.sleep(0)  # every task has now taken a slot or joined its tenant's queue
    go.set()
    await asyncio.gather(*tasks)
    return order


def test_cap_holds_and_tenants_take_turns():
    gate = FairGate(2)
    burst = [f"a:{i}" for i in range(8)]
    order = asyncio.run(_run_burst(gate, burst + ["b:0", "c:0", "b:1"]))
    assert order[:2] == ["a:0", "a:1"]  # free slots go first come, first served
    # Then tenants alternate: b and c do not wait for a's whole burst.
    assert order[2:7] == ["a:2", "b:0", "c:0", "a:3", "b:1"]
    assert [x for x in order if x.startswith("a")] == burst  # FIFO within a tenant
    assert gate.active == 0 and gate.waiting == 0


def test_never_more_than_the_limit_at_once():
    gate = FairGate(3)
    peak = 0

    async def main() -> None:
        async def one(i: int) -> None:
            nonlocal peak
            async with gate.slot(f"t{i % 4}"):
                peak = max(peak, gate.active)
                await asyncio.sleep(0.001)

        await asyncio.gather(*(one(i) for i in range(40)))

    asyncio.run(main())
    assert peak == 3 and gate.active == 0


def test_a_cancelled_waiter_gives_its_turn_away():
    gate = FairGate(1)

    async def main() -> list[str]:
        got: list[str] = []
        holder = asyncio.Event()

        async def hold() -> None:
            async with gate.slot("a"):
                await holder.wait()

        async def want(label: str) -> None:
            async with gate.slot(label):
                got.append(label)

        first = asyncio.create_task(hold())
        await asyncio.sleep(0)
        quitter = asyncio.create_task(want("b"))
        waiter = asyncio.create_task(want("c"))
        await asyncio.sleep(0)
        quitter.cancel()
        holder.set()
        await asyncio.gather(first, waiter)
        with pytest.raises(asyncio.CancelledError):
            await quitter
        return got

    assert asyncio.run(main()) == ["c"]
    assert gate.active == 0 and gate.waiting == 0
