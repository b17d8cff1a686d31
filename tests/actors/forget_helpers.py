"""Helpers of the forgetting tests: feed actors, run a forget job to its end, compare twins,
and look for a text in every object and Redis key of a memory."""

from __future__ import annotations

import time
import uuid
import zlib

from storage import Storage
from tests.cluster.helpers import encode

NEVER_SEEN = [f"unrelated sentence {i} about quasars and {w}" for i, w in enumerate(["tea", "jazz", "ice", "rust"])]


def feed(actor, items: list, domain: str | None = None) -> None:
    """Observe each item: a text (one write) or a list of texts (one batch write)."""
    for item in items:
        texts = [item] if isinstance(item, str) else list(item)
        actor.observe(uuid.uuid4().hex, encode(texts), texts, domain)


def feed_checkpointed(actor, texts: list[str], every: int, timeout: float = 60) -> None:
    """Observe `texts` `every` at a time (the actor's checkpoint period), letting each group's
    auto-checkpoint land before the next: a fast feed would otherwise leave the background
    checkpointer one checkpoint for the lot (and the history where it was)."""
    for start in range(0, len(texts), every):
        feed(actor, texts[start : start + every])
        deadline = time.monotonic() + timeout
        while (actor._latest_auto or {}).get("step", -1) < actor._mem.step:
            assert time.monotonic() < deadline, "no auto-checkpoint within the timeout"
            time.sleep(0.02)


def run_stream(actor, steps: list) -> None:
    """Texts, lists of texts (one write each), tuples (one batch write), "consolidate",
    "tag:<name>", "restore:<name>"."""
    for step in steps:
        if step == "consolidate":
            actor.consolidate()
        elif isinstance(step, str) and step.startswith("tag:"):
            actor.checkpoint(step[4:])
        elif isinstance(step, str) and step.startswith("restore:"):
            actor.restore(step[8:])
        elif isinstance(step, tuple):
            feed(actor, [list(step)])
        else:
            feed(actor, step if isinstance(step, list) else [step])


def forget(actor, selector: dict, *, mode: str = "exact", dry_run: bool = False, timeout: float = 120,
           **options) -> dict:
    job_id = uuid.uuid4().hex
    actor.forget_start(job_id, {"selector": selector, "mode": mode, "dry_run": dry_run,
                                "who": {"key": "test"}, **options})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = actor.forget_status(job_id)
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"forget job {job_id} did not finish within {timeout}s: {job}")


def assert_twins(m, t, prompts: list[str]) -> None:
    """Same weights, same step, same answers (infer and surprise) for every prompt."""
    sm, st = m.stats(), t.stats()
    assert sm["weight_hash"] == st["weight_hash"]
    assert (sm["step"], sm["episodes"], sm["patterns"]) == (st["step"], st["episodes"], st["patterns"])
    for prompt in prompts:
        vector = encode([prompt])[0]
        assert m.infer(vector) == t.infer(vector)
        assert m.surprise(vector, prompt) == t.surprise(vector, prompt)


def never_seen_surprises(actor) -> list[float]:
    return [actor.surprise(encode([t])[0], t)["score"] for t in NEVER_SEEN]


def find_text(storage: Storage, qname: str, text: str | bytes) -> list[str]:
    """Where `text` (UTF-8 bytes, or the bytes given; also zlib-compressed streams decoded) still is: every object
    under the memory's prefix, every chunk in the store (checkpoints share them, so a test
    must not keep the text in another memory of its store) and every Redis key of the memory
    (and its tenant's audit)."""
    from storage.cas import CHUNK_PREFIX

    needle = text if isinstance(text, bytes) else text.encode("utf-8")
    objects = storage.checkpoints
    found = [key for key in objects.list(f"{qname}/") + objects.list(CHUNK_PREFIX)
             if _holds(objects.get(key), needle)]
    client, keys = storage.metadata.client, storage.metadata.keys
    tenant = qname.split("/", 1)[0]
    for key in [*keys.memory_keys(qname), keys.audit(tenant)]:
        if any(_holds(value, needle) for value in _values(client, key)):
            found.append(key)
    return found


def _holds(data: bytes, needle: bytes) -> bool:
    if needle in data:
        return True
    try:
        return needle in zlib.decompress(data)
    except zlib.error:
        return False


def _values(client, key: str) -> list[bytes]:
    kind = client.type(key).decode()
    if kind == "string":
        return [client.get(key)]
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "hash":
        return [v for pair in client.hgetall(key).items() for v in pair]
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
    if kind == "stream":
        return [v for _id, fields in client.xrange(key) for pair in fields.items() for v in pair]
    return []
