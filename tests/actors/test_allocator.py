"""`keep_freed_buffers`: a memory actor's malloc thresholds (actors/allocator.py). Checked through
glibc's own accounting (mallinfo2) in fresh processes: with them, a block of a write's size
(weight tensors, lookup scratch: 1-4 MB) comes from the heap and stays there after it is freed,
ready for the next write, where by default it is mapped and unmapped on every use (each use
faulting its pages in again; the measured effect on a batch write is in the module's doc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# One 3.5 MB block allocated and freed: how many bytes were mapped for it (outside the heap),
# and how many free bytes the heap holds after the free (ready for the next block).
ONE_BLOCK = """
import ctypes, sys
import numpy as np
from actors.allocator import keep_freed_buffers

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert keep_freed_buffers()
before = libc.mallinfo2()
block = np.ones((7 << 19) // 8)  # 3.5 MB
mapped = libc.mallinfo2().hblkhd - before.hblkhd
del block
print(mapped, libc.mallinfo2().fordblks)
"""
BLOCK = 7 << 19


def _one_block(mode: str) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", ONE_BLOCK, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    mapped, free = done.stdout.split()
    return int(mapped), int(free)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and mallinfo2")
def test_a_write_sized_block_is_served_from_the_heap_and_kept_there_after_it_is_freed():
    mapped, free = _one_block("default")
    assert mapped >= BLOCK and free < BLOCK, (mapped, free)  # glibc's default: mapped, then gone
    mapped, free = _one_block("tuned")
    assert mapped == 0 and free >= BLOCK, (mapped, free)
