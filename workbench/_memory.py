"""Give freed memory back to the operating system between the steps of a streaming analysis.

glibc's malloc serves every block under its (adaptive, up to 32 MB) mmap threshold from its heaps and keeps what
is freed there for reuse: after a layer's temporaries of many sizes are freed, the process's resident size stays
at its high-water mark and the next layer's blocks land beside them, so a stream that should hold one layer grows
by a GB at 7B shapes (measured on the scale benchmark). ``malloc_trim`` releases the free pages; elsewhere (macOS,
musl, Windows) there is nothing to call and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed() -> None:
    """Hand the allocator's free pages back to the OS (glibc; a no-op elsewhere). Costs ~a millisecond."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
