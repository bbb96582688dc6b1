"""Keep freed tensor memory in the process (glibc's ``malloc``), instead of returning it to the kernel each step.

A training step allocates and frees the same tensors every time: at batch 128 and
16 configurations a hidden layer's activation is ``(16, 128, 128)`` floats, 1 MiB.
glibc serves a block that large with a fresh ``mmap`` (or grows the heap and trims
it back when the block is freed), so each step touches new pages, and each page
costs a fault and a zero fill: on the development machine about 570 faults a step
and some 20% of the 16-configuration digits step (an element-wise op on such a
tensor took 450 us in training against 43 us on memory already mapped). PyTorch's
CPU tuning guide suggests swapping the allocator (jemalloc, tcmalloc) for this; the
two ``mallopt`` settings below give glibc's the same behaviour: blocks up to
:data:`MMAP_THRESHOLD` come from the heap, and up to :data:`TRIM_THRESHOLD` of free
heap is kept for the next step. The price is that the process keeps its peak heap
(less that margin) until it exits, which suits a command-line process.

Only the command line (and the reproduce workers it starts) calls
:func:`keep_freed_memory`: importing the library changes nothing in a user's process.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (32 MiB, glibc's largest on 64-bit systems).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap kept for reuse before it is returned to the kernel.
TRIM_THRESHOLD = 256 * 1024 * 1024
#: Environment variables by which a user chose the allocator's behaviour themselves.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES",
                 "LD_PRELOAD")


def allocator_environment() -> dict[str, str]:
    """The environment variables that give a new process the same settings (glibc reads them at start)."""
    return {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def keep_freed_memory() -> bool:
    """Apply :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` to this process's ``malloc``.

    Does nothing (returns False) off Linux, on a C library without ``mallopt``
    (musl), or when the user set the allocator up themselves (any of
    :data:`USER_SETTINGS` in the environment, e.g. jemalloc preloaded).

    Returns
    -------
    bool
        Whether both settings were applied.
    """
    if not sys.platform.startswith("linux") or any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # both or neither: a trim threshold alone turns off glibc's adaptive mmap threshold and makes it worse
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return False
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
