"""Model weights on transparent huge pages (Linux): MatMulNBits streams every weight once per decoded token, and
on 4 KiB pages that walk takes a TLB miss and a hardware-prefetch stop at every page boundary. onnxruntime's CPU
kernels keep their prepacked weights in large anonymous mappings (the heap); once a session is created, those
are collapsed into 2 MiB pages (MADV_COLLAPSE, Linux 6.1+). The machine's THP setting may be `madvise` (as on
these machines), so nothing else would give the process huge pages."""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

HUGE_PAGE = 2 << 20
MIN_REGION = 16 << 20  # smaller mappings are the interpreter's and numpy's, not weights
MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25


def large_anonymous_regions(maps: str, min_bytes: int) -> list[tuple[int, int]]:
    """[start, end) of each anonymous read-write mapping in /proc/self/maps text, trimmed to huge-page
    boundaries, that still spans `min_bytes`."""
    regions = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[4] != "0" or not fields[1].startswith("rw"):
            continue  # file-backed or read-only
        if len(fields) > 5 and not fields[5].startswith("[heap"):
            continue  # [stack], [vvar] and the like
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        lo, hi = -(-lo // HUGE_PAGE) * HUGE_PAGE, hi // HUGE_PAGE * HUGE_PAGE
        if hi - lo >= min_bytes:
            regions.append((lo, hi))
    return regions


def collapse_weights(min_bytes: int = MIN_REGION) -> int:
    """Collapse the process's large anonymous mappings into huge pages; returns the bytes collapsed (0 where the
    platform cannot: not Linux, a kernel before 6.1, THP disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    for lo, hi in large_anonymous_regions(maps, min_bytes):
        madvise(lo, hi - lo, MADV_HUGEPAGE)
        if madvise(lo, hi - lo, MADV_COLLAPSE) == 0:
            done += hi - lo
    log.debug("weights on huge pages: %d MiB", done >> 20)
    return done
