"""Giving freed C heap back to the kernel.

glibc returns freed memory at the top of its heaps only, and only past a
threshold; what bcc's compile (clang/LLVM) and each DuckDB flush free in the
middle stays resident until ``malloc_trim``.  Measured: 12-30 MB after the
BPF compile, about 3 MB after store flushes (bench/capture_bench.py (g)).
"""

from __future__ import annotations

import ctypes


def release_free_heap() -> None:
    """malloc_trim(0): a few hundred microseconds; call after big, rare work."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
