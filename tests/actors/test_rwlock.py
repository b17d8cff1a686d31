"""ReadWriteLock: readers share it, a writer holds it alone, and a waiting writer goes first."""

from __future__ import annotations

import threading
import time

from actors.rwlock import ReadWriteLock


def _started(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_readers_share_it_and_a_writer_waits_for_them_then_goes_before_new_readers():
    lock, events = ReadWriteLock(), []
    both_in, release_readers = threading.Barrier(2), threading.Event()

    def reader(name: str) -> None:
        with lock.shared():
            events.append(f"{name} in")
            both_in.wait(5)  # two readers inside at once, or this times out
            release_readers.wait(5)
            events.append(f"{name} out")

    def writer() -> None:
        with lock:
            events.append("writer in")
            time.sleep(0.05)
            events.append("writer out")

    def late_reader() -> None:
        with lock.shared():
            events.append("late reader in")

    readers = [_started(lambda n=n: reader(n)) for n in ("r1", "r2")]
    while events.count("r1 in") + events.count("r2 in") < 2:
        time.sleep(0.01)
    waiting_writer = _started(writer)
    time.sleep(0.1)  # the writer is waiting for the readers
    late = _started(late_reader)
    time.sleep(0.1)
    assert "writer in" not in events and "late reader in" not in events  # the late reader queues behind it
    release_readers.set()
    for thread in (*readers, waiting_writer, late):
        thread.join(5)
    assert events.index("writer in") > max(events.index("r1 out"), events.index("r2 out"))
    assert events.index("late reader in") > events.index("writer out")
