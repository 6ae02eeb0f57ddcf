"""Keep freed memory for reuse in the processes that prepare crawled images (glibc malloc).

Each image passes through a few buffers of 0.3-1 MB (the decoded pixels, the resizer's input
and output copies). glibc serves blocks over 128 KiB with a fresh mmap, raises that threshold as
big blocks are freed, and gives the top of the heap back to the kernel once more than twice that
is free. With these sizes that meant new pages for nearly every buffer, and the kernel's
faulting and zeroing of them a large share of the pipeline's CPU time. Blocks under 32 MiB are
served from the heap and up to 64 MiB of free heap is kept, so buffers are reused instead.

The cost is memory a process holds on to after a peak, bounded by the trim threshold at the top
of its heap (bench/soak.py reports the workers' memory). Larger blocks (a
decompression-bomb-sized decode) still come from mmap and go back at once.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Set this process's malloc thresholds (both: setting either alone stops glibc adjusting
    the other, and a fixed 128 KiB mmap threshold is the slow case). False where the C
    library has no mallopt (macOS, Windows) or refuses; nothing changes then."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # (TypeError: Windows, where there is no "c" to find)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
