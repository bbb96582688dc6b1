"""Timing and memory measurement: medians of repeats after a warm-up, in one process.

Every figure of the benchmark is measured here the same way: run a step
function ``warmup`` times (first-call allocations, lazy initialisation,
caches), then ``repeats`` blocks of ``steps`` calls, each block timed with the
device synchronised at both ends; report the median block. Ratios between
variants measured in one process hold on a noisy machine far better than
absolute figures do.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ppl_vae._validate import check_int_range

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def synchronise(device: torch.device | str) -> None:
    """Wait for queued device work (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Median seconds per call over ``repeats`` timed blocks.

    Attributes
    ----------
    seconds_per_step
        Median over blocks of (block wall time / steps).
    spread
        (max - min) / median over blocks: a noise indicator.
    steps, repeats
        Calls per block and number of blocks.
    """

    seconds_per_step: float
    spread: float
    steps: int
    repeats: int

    @property
    def steps_per_second(self) -> float:
        return 1.0 / self.seconds_per_step


def time_steps(step: Callable[[], object], *, device: torch.device | str = "cpu", warmup: int = 3,
               repeats: int = 5, steps: int = 20) -> Timing:
    """Time ``step()``: ``warmup`` untimed calls, then the median of ``repeats`` blocks of ``steps`` calls.

    Parameters
    ----------
    step
        The work to time (one SVI step, say); its return value is ignored.
    device
        Synchronised before and after each block so queued GPU kernels count.
    warmup, repeats, steps
        Untimed calls (>= 0), timed blocks (>= 1), calls per block (>= 1).
    """
    check_int_range("warmup", warmup, 0)
    check_int_range("repeats", repeats, 1)
    check_int_range("steps", steps, 1)
    for _ in range(warmup):
        step()
    blocks = []
    for _ in range(repeats):
        synchronise(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronise(device)
        blocks.append((time.perf_counter() - start) / steps)
    median = statistics.median(blocks)
    return Timing(median, (max(blocks) - min(blocks)) / median, steps, repeats)


def time_interleaved(blocks: dict[str, tuple[Callable[[], object], int]], *,
                     device: torch.device | str = "cpu", repeats: int = 5) -> dict[str, Timing]:
    """Time several variants in round-robin blocks, so slow drifts in machine load hit all alike.

    Parameters
    ----------
    blocks
        Variant name -> ``(block, steps)``: ``block()`` does ``steps`` units of
        work (a loop of SVI steps, or one whole ``fit`` of ``steps`` steps).
        Warm the variants up before calling this.
    device
        Synchronised around every block.
    repeats
        Rounds; each round times one block of every variant, in order.

    Returns
    -------
    dict
        Variant name -> :class:`Timing` (median over rounds of seconds per step).
    """
    check_int_range("repeats", repeats, 1)
    seconds: dict[str, list[float]] = {name: [] for name in blocks}
    for _ in range(repeats):
        for name, (block, steps) in blocks.items():
            synchronise(device)
            start = time.perf_counter()
            block()
            synchronise(device)
            seconds[name].append((time.perf_counter() - start) / steps)
    timings = {}
    for name, values in seconds.items():
        median = statistics.median(values)
        timings[name] = Timing(median, (max(values) - min(values)) / median, blocks[name][1], repeats)
    return timings


def repeat_block(step: Callable[[], object], steps: int) -> Callable[[], None]:
    """A block of ``steps`` calls of ``step`` (for :func:`time_interleaved`)."""
    def block() -> None:
        for _ in range(steps):
            step()

    return block


def median_wall_time(run: Callable[[], object], *, device: torch.device | str = "cpu", repeats: int = 3,
                     warmup: int = 1) -> float:
    """Median wall seconds of whole calls ``run()`` (for end-to-end runs: a fit, a sweep)."""
    check_int_range("repeats", repeats, 1)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        synchronise(device)
        start = time.perf_counter()
        run()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class PeakMemory:
    """Peak host resident memory and peak device memory over a ``with`` block.

    Host: the kernel's high-water mark of resident memory (``VmHWM``), reset
    on entry through ``/proc/self/clear_refs`` where Linux allows it (else the
    process-lifetime ``ru_maxrss``, which never decreases: ``host_reset`` is
    then False). Device: ``torch.cuda.max_memory_allocated`` after a reset
    (CUDA only; None otherwise).

    Attributes
    ----------
    host_mb, device_mb
        Peaks in MiB after the block.
    host_reset
        Whether the host peak covers only the block.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.host_mb: float | None = None
        self.device_mb: float | None = None
        self.host_reset = False

    def __enter__(self) -> PeakMemory:
        try:
            _CLEAR_REFS.write_text("5")
            self.host_reset = True
        except OSError:
            self.host_reset = False
        if self.device.type == "cuda":
            synchronise(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        self.host_mb = host_peak_mb()
        if self.device.type == "cuda":
            synchronise(self.device)
            self.device_mb = torch.cuda.max_memory_allocated(self.device) / 2**20


def host_peak_mb() -> float:
    """Peak resident memory of this process in MiB (``VmHWM``, else ``ru_maxrss``)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
