"""Concurrency: many writers into one memory are applied one at a time, none lost; reads
run beside them."""

from __future__ import annotations

import asyncio

from tests.cluster.helpers import SMALL, encode, kill_actor

WRITERS, WRITES_EACH = 16, 5


def test_sixteen_concurrent_writers(shared_cluster, arun, tenant):
    cluster = shared_cluster()  # auto-checkpoints every 40 writes, so two land mid-stream
    arun(cluster.create_memory(tenant, "busy", SMALL))
    texts = [f"writer {w} says item {k}" for w in range(WRITERS) for k in range(WRITES_EACH)]
    vectors = encode(texts)

    async def writer(w: int) -> list[int]:
        steps = []
        for k in range(WRITES_EACH):
            i = w * WRITES_EACH + k
            result = await cluster.observe(tenant, "busy", vectors[i : i + 1], [texts[i]])
            steps.append(result["step"])
        return steps

    async def reader() -> int:
        reads = 0
        for i in range(20):
            await cluster.surprise(tenant, "busy", vectors[i], texts[i])
            await cluster.stats(tenant, "busy")
            reads += 1
        return reads

    async def run_all():
        return await asyncio.gather(*(writer(w) for w in range(WRITERS)), reader())

    *steps, reads = arun(run_all())
    sent = WRITERS * WRITES_EACH
    # Every write got its own step: applied strictly one after another, none lost or doubled.
    assert sorted(s for per_writer in steps for s in per_writer) == list(range(1, sent + 1))
    assert all(per_writer == sorted(per_writer) for per_writer in steps)
    assert reads == 20
    stats = arun(cluster.stats(tenant, "busy"))
    assert stats["total_observations"] == sent
    assert len(arun(cluster.history(tenant, "busy", limit=1000))["observations"]) == sent
    # The interleaved WAL and the mid-stream checkpoint replay to the same weights.
    kill_actor(cluster.settings.namespace, f"{tenant}/busy")
    after = arun(cluster.stats(tenant, "busy"))
    assert after["weight_hash"] == stats["weight_hash"] and after["total_observations"] == sent


def test_more_ordered_writes_in_flight_than_actor_slots_neither_block_the_memory_nor_fail(make_cluster, arun,
                                                                                         tenant):
    """Each write waiting for its predecessor held one of the actor's call slots: with as many
    waiting as there are slots, the predecessor (and every read) queued behind them until they
    all failed with out_of_order. They now wait in the control plane."""
    from actors import ActorSettings

    cluster = make_cluster(actor_max_concurrency=2, actor=ActorSettings(ordered_write_wait_seconds=15.0))
    texts = [f"ordered note {i} on the {w} pier" for i, w in enumerate("abcdefgh")]
    vectors = encode(texts)
    for name in ("queue", "queue-twin"):
        arun(cluster.create_memory(tenant, name, SMALL))
    for i, text in enumerate(texts):
        arun(cluster.observe(tenant, "queue-twin", vectors[i : i + 1], [text]))

    async def send(i: int, delay: float) -> dict:
        await asyncio.sleep(delay)
        return await cluster.observe(tenant, "queue", vectors[i : i + 1], [texts[i]], request_id=f"q{i}",
                                     after_request_id=f"q{i - 1}" if i else None)

    async def newest_first_and_a_read() -> tuple[list[dict], dict, float]:
        n = len(texts)
        writes = asyncio.gather(*(send(i, 0.3 + 0.05 * (n - 1 - i)) for i in range(1, n)))
        await asyncio.sleep(0.8)  # every successor is waiting now: a read still gets a slot
        loop = asyncio.get_running_loop()
        began = loop.time()
        stats = await cluster.stats(tenant, "queue")
        read_took = loop.time() - began
        first = await send(0, 0.0)
        return [first, *await writes], stats, read_took

    results, stats, read_took = arun(newest_first_and_a_read())
    assert stats["total_observations"] == 0 and read_took < 10, read_took  # not behind the waiting writes
    assert [r["step"] for r in results] == list(range(1, len(texts) + 1))
    assert results[-1]["weight_hash"] == arun(cluster.stats(tenant, "queue-twin"))["weight_hash"]


def test_writes_naming_a_predecessor_the_memory_does_not_know_wait_without_blocking_it(make_cluster, arun,
                                                                                     tenant):
    """This process saw write "old" applied, but to the memory deleted since: the memory made
    again under the name does not know it. Writes naming it were sent on to its actor, waited
    there in its call slots, and every read queued behind them until they timed out."""
    from actors import ActorSettings
    from errors import OutOfOrder

    cluster = make_cluster(actor_max_concurrency=2, actor=ActorSettings(ordered_write_wait_seconds=4.0))
    vectors = encode(["before the delete", "after it"])
    arun(cluster.create_memory(tenant, "again", SMALL))
    arun(cluster.observe(tenant, "again", vectors[:1], ["before the delete"], request_id="old"))
    arun(cluster.delete_memory(tenant, "again"))
    arun(cluster.create_memory(tenant, "again", SMALL))

    async def orphans_and_a_read() -> tuple[list, float]:
        writes = asyncio.gather(*(cluster.observe(tenant, "again", vectors[1:], ["after it"], request_id=f"n{i}",
                                                  after_request_id="old") for i in range(4)),
                                return_exceptions=True)
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await cluster.stats(tenant, "again")
        read_took = loop.time() - began
        return await writes, read_took

    answers, read_took = arun(orphans_and_a_read())
    assert read_took < 2, read_took  # not queued behind the waiting writes
    assert all(isinstance(a, OutOfOrder) and "'old'" in str(a) for a in answers), answers
    assert arun(cluster.stats(tenant, "again"))["total_observations"] == 0


def test_writes_that_name_their_predecessor_are_applied_in_that_order(make_cluster, arun, tenant):
    """A client keeping several writes in flight names each one's predecessor: they arrive in
    any order and are applied in the client's; one whose predecessor never comes is refused
    (after the wait) and nothing of it is applied."""
    import pytest

    from actors import ActorSettings
    from errors import InvalidInput, OutOfOrder

    cluster = make_cluster(actor=ActorSettings(checkpoint_every_writes=40, checkpoint_every_seconds=3600.0,
                                               ordered_write_wait_seconds=2.0))
    texts = [f"chained write {i} about the {w} harbour" for i, w in enumerate(["north", "south", "east",
                                                                                "west", "old", "new"])]
    vectors = encode(texts)
    for name in ("chain", "twin"):
        arun(cluster.create_memory(tenant, name, SMALL))
    for i, text in enumerate(texts):  # the twin: one at a time, in order
        arun(cluster.observe(tenant, "twin", vectors[i : i + 1], [text]))

    async def send(i: int, delay: float) -> dict:
        await asyncio.sleep(delay)
        return await cluster.observe(tenant, "chain", vectors[i : i + 1], [texts[i]], request_id=f"w{i}",
                                     after_request_id=f"w{i - 1}" if i else None)

    async def newest_first() -> list[dict]:  # w5 reaches the actor first, w0 last
        n = len(texts)
        return await asyncio.gather(*(send(i, 0.1 * (n - 1 - i)) for i in range(n)))

    results = arun(newest_first())
    assert [r["step"] for r in results] == list(range(1, len(texts) + 1))
    twin = arun(cluster.stats(tenant, "twin"))
    assert results[-1]["weight_hash"] == twin["weight_hash"]

    with pytest.raises(OutOfOrder, match="never-sent"):
        arun(cluster.observe(tenant, "chain", vectors[:1], ["one more"], request_id="w6",
                             after_request_id="never-sent"))
    with pytest.raises(InvalidInput, match="itself"):
        arun(cluster.observe(tenant, "chain", vectors[:1], ["one more"], request_id="w7", after_request_id="w7"))
    stats = arun(cluster.stats(tenant, "chain"))
    assert stats["total_observations"] == len(texts) and stats["weight_hash"] == twin["weight_hash"]
    # the refused write was not remembered as done: sent again without the missing predecessor, it applies
    again = arun(cluster.observe(tenant, "chain", vectors[:1], ["one more"], request_id="w6"))
    assert again["step"] == len(texts) + 1
