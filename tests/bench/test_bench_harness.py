"""Timing blocks and memory peaks."""

import numpy as np
import pytest

from ppl_vae.bench.harness import PeakMemory, host_peak_mb, repeat_block, time_interleaved, time_steps


def test_time_steps_runs_warmup_then_repeated_blocks():
    calls = []
    timing = time_steps(lambda: calls.append(1), warmup=2, repeats=3, steps=4)
    assert len(calls) == 2 + 3 * 4
    assert timing.seconds_per_step > 0 and timing.steps_per_second == 1 / timing.seconds_per_step
    assert (timing.steps, timing.repeats) == (4, 3)


def test_interleaved_blocks_alternate_between_variants():
    order = []
    blocks = {"a": (repeat_block(lambda: order.append("a"), 2), 2), "b": (lambda: order.append("b"), 1)}
    timings = time_interleaved(blocks, repeats=3)
    assert order == ["a", "a", "b"] * 3
    assert set(timings) == {"a", "b"} and timings["a"].repeats == 3


@pytest.mark.parametrize("kwargs, match", [({"repeats": 0}, "repeats"), ({"steps": 0}, "steps"),
                                           ({"warmup": -1}, "warmup")])
def test_time_steps_rejects_bad_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_steps(lambda: None, **kwargs)


def test_peak_memory_sees_a_large_allocation():
    baseline = host_peak_mb()
    with PeakMemory("cpu") as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    assert memory.device_mb is None
    assert memory.host_mb >= 60 if memory.host_reset else memory.host_mb >= baseline
