"""Rebinding: how one MemoryActor process serves memory after memory (mixed into MemoryActor).

`release()` hibernates the memory served and resets every per-memory field (the actor's
`_reset_binding`), so the process, with torch imported and storage open, can `start()` the
next memory: a burst of forks or wake-ups costs state loads, not process starts. `call()` is
how the control plane reaches a memory (sent packed, through `route()`): it names the memory,
so a handle cached before the process was given another memory is refused instead of acting on
the wrong one.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from errors import InvalidInput, Unavailable

from actors.allocator import return_freed_memory
from storage import shown
from actors.phases import Phases

__all__ = ["Rebinding", "ROUTED_METHODS", "RELEASE_WAIT", "TRIM_AFTER"]

# What callers may run through call(qname, ...): the memory's own operations.
ROUTED_METHODS = frozenset({
    "observe", "consolidate", "checkpoint", "restore", "snapshot", "surprise", "infer",
    "attention_map", "explain", "stats", "where", "flush_records", "forget_start", "forget_status",
    "has_applied",
})
RELEASE_WAIT = 60.0  # seconds release() waits for calls in flight
# Seconds a released process stays unbound before its freed heap goes back to the OS. In a
# burst the next memory is bound within milliseconds and reuses those pages as they are.
TRIM_AFTER = 5.0


class Rebinding:
    """release() and call(); relies on MemoryActor's locks, `_calls`, `_in_flight` and fields."""

    _start_lock: threading.Lock
    _calls: threading.Condition
    _in_flight: int
    _qname: str | None
    _releasing: bool
    _started: bool
    _checkpointer: threading.Thread | None
    _forget_work_running: Callable[[], bool]
    _trim_timer: threading.Timer | None

    def release(self, if_idle: bool = False, save: bool = True) -> dict:
        """Hibernate, wait for calls in flight, then forget the memory: this process is a spare
        again (imports and storage kept), ready for start(another). Unavailable if calls do not
        finish in time (the supervisor then kills the process instead). With `if_idle`, nothing
        is done while a call runs: {"busy": True} (an idle memory is not idle while a write
        waits for its predecessor, and hibernating would refuse that write). `save` False: no
        checkpoint of the tail (the memory is being deleted)."""
        phases = Phases()
        with self._start_lock:
            if if_idle:
                with self._calls:
                    if self._in_flight:
                        return {"busy": True}
                    self._releasing = True  # from here new calls are refused (retried elsewhere)
            summary = self.prepare_hibernate(save) if self._started else {"step": None}
            phases.lap("hibernate")
            with self._calls:
                self._releasing = True
                if not self._calls.wait_for(lambda: self._in_flight == 0, RELEASE_WAIT):
                    raise Unavailable(f"calls to {self._qname} did not finish within {RELEASE_WAIT:.0f}s")
            phases.lap("calls_in_flight")
            if self._checkpointer is not None:
                self._checkpointer.join()
            if self._forget_work_running():
                raise Unavailable(f"a forget of {self._qname} is still finishing; this process is not reused")
            self._reset_binding(None)
            phases.lap("unbind")
            self._trim_if_still_unbound()
        return {**summary, "timings": phases.as_dict()}

    def _trim_if_still_unbound(self) -> None:
        """Return the freed heap to the OS in TRIM_AFTER seconds unless a memory is bound by
        then (caller holds `_start_lock`)."""
        if self._trim_timer is not None:
            self._trim_timer.cancel()

        def trim() -> None:
            with self._start_lock:
                if self._qname is None:
                    return_freed_memory()

        self._trim_timer = threading.Timer(TRIM_AFTER, trim)
        self._trim_timer.daemon = True
        self._trim_timer.start()

    def route(self, request: tuple[str, str, tuple, dict]) -> Any:
        """call(qname, method, *args, **kwargs) from `request` = (qname, method, args, kwargs):
        what the router sends. Ray serialises each argument of a remote call on its own, so one
        packed argument costs ~0.7 ms less per call than an observe's eight (measured here)."""
        qname, method, args, kwargs = request
        return self.call(qname, method, *args, **kwargs)

    def call(self, qname: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` for memory `qname`: how the control plane reaches a memory.
        A caller's cached handle may point at a process that serves another memory by now;
        then the call is refused with Unavailable (the caller asks the supervisor again)."""
        if method not in ROUTED_METHODS:
            raise InvalidInput(f"{method!r} is not a memory operation")
        with self._calls:
            if qname != self._qname or self._releasing:
                raise Unavailable(f"memory {shown(qname)} is not served by this actor any more; retry")
            self._in_flight += 1
        try:
            return getattr(self, method)(*args, **kwargs)
        finally:
            with self._calls:
                self._in_flight -= 1
                self._calls.notify_all()
