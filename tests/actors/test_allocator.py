"""`keep_freed_buffers`: a memory actor's malloc thresholds. A batch write into a memory of
~12k items faults its fresh weight tensors in again on every chunk under glibc's adaptive
thresholds; with the actor's thresholds it reuses freed heap instead."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Page faults while a memory of the `hash` size learns items 256..12,288 in batches of 256 (the
# import command's batch), in a fresh process with or without the actor's settings.
WRITE_FAULTS = """
import resource, sys
import numpy as np
from actors.allocator import keep_freed_buffers
from memory import MemoryConfig, NeuralMemory
if sys.argv[1] == "tuned":
    assert keep_freed_buffers()
vectors = np.random.default_rng(0).standard_normal((12288, 384)).astype(np.float32)
texts = [f"item {i}" for i in range(len(vectors))]
memory = NeuralMemory(MemoryConfig(encoder="hash"))
memory.observe_vectors(vectors[:256], texts[:256])
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for start in range(256, len(vectors), 256):
    memory.observe_vectors(vectors[start:start + 256], texts[start:start + 256])
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _write_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", WRITE_FAULTS, mode], capture_output=True, text=True,
                          timeout=300, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_large_batch_write_reuses_freed_memory_instead_of_faulting_it_in():
    default, tuned = _write_faults("default"), _write_faults("tuned")
    # measured here: ~155k-170k faults by default, ~3.5k with the actor's thresholds
    assert tuned < default / 4, (tuned, default)
