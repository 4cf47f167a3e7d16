"""Keep freed memory in the process instead of handing it back to the kernel (glibc only).

Why: a training step allocates and frees activations of tens to hundreds of MB (seed size:
57 344 samples × 384 channels × 4 B = 88 MB per layer and pass). glibc's ``malloc`` serves
blocks that large with a fresh ``mmap`` and returns them with ``munmap`` when freed, so every
step touches its activations for the first time again: one page fault per 4 KiB page, which
the kernel must also zero. Measured on this 2-core VM (1 thread): filling a fresh 78 MB
tensor costs ~33 ms against ~2 ms for the same fill into memory already touched; a whole
seed-size field train step spends ~24% of its CPU time there (12.5 s with
``keep_freed_memory`` against 16.4 s without; benchmarks/bench_render.py ``--malloc``).

``keep_freed_memory`` sets two glibc ``mallopt`` parameters for the rest of the process:
``M_MMAP_MAX = 0`` (large blocks come from the heap, not from ``mmap``) and a 1 GiB
``M_TRIM_THRESHOLD`` (freed memory at the top of the heap is kept for the next step). The
process's resident memory then stays at its peak (plus heap fragmentation) instead of shrinking
between steps. Opt-in, called by nothing in the package: ``benchmarks/bench_render.py --malloc
keep`` held 14.5 GB at seed size, B = 2, and was OOM-killed on this shared 23 GB VM, where the
glibc default finished. Results are bit-identical: only where the memory comes from changes.
"""

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_TRIM_THRESHOLD_BYTES = 1 << 30
_applied = False


def keep_freed_memory() -> bool:
    """Apply the allocator settings above once per process. Returns True when they are in effect,
    False where they cannot be (not Linux/glibc); never raises."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
    return _applied
