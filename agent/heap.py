"""Giving freed C heap back to the kernel.

glibc returns freed memory at the top of its heaps only, and only past a
threshold; what each DuckDB flush (and a Go/Bun binary's analysis) frees in
the middle stays resident until ``malloc_trim``.  Measured: about 3 MB after
store flushes (bench/capture_bench.py (g)).  (The BPF compile, which left
12-30 MB, now runs in a child process: capture/bpf_loader.py.)
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _libc() -> ctypes.CDLL:
    # Once: each CDLL() is a dlopen and a new function-pointer class (~9 KB),
    # and release_free_heap runs after every store flush.
    return ctypes.CDLL(None)


def release_free_heap() -> None:
    """malloc_trim(0): a few hundred microseconds; call after big, rare work."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# glibc's M_ARENA_MAX (malloc.h): at most this many malloc arenas.  By default
# every thread that mallocs may get one of its own (up to 8 per core), and a
# thread's arena keeps its high-water mark: DuckDB's threads left a trail of them.  Two: the run loop's, and one for all other threads.
M_ARENA_MAX = -8
MAX_ARENAS = 2


def limit_arenas(arenas: int = MAX_ARENAS) -> None:
    """mallopt(M_ARENA_MAX, arenas), as MALLOC_ARENA_MAX would at start; call early."""
    try:
        _libc().mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # not glibc
        pass
