"""Model weights on transparent huge pages: which mappings are collapsed, and that a CPU session's are."""
import os
import re
import subprocess
import sys

import pytest

from llm_runtime.graph.huge_pages import HUGE_PAGE, large_anonymous_regions

MAPS = """\
55d4c0a00000-55d4c0a21000 r--p 00000000 08:01 1234   /usr/bin/python3
55d4c1000000-55d4c8400000 rw-p 00000000 00:00 0      [heap]
7f0000100000-7f0000b00000 rw-p 00000000 00:00 0
7f0003000000-7f0003100000 rw-p 00000000 00:00 0
7f0004000000-7f0008000000 rw-p 00000000 08:01 99     /models/model.onnx.data
7f0009000000-7f000d000000 r--p 00000000 00:00 0
7ffd00000000-7ffd04000000 rw-p 00000000 00:00 0      [stack]
"""


def test_large_anonymous_read_write_mappings_trimmed_to_huge_pages():
    regions = large_anonymous_regions(MAPS, 16 << 20)
    assert regions == [(0x55d4c1000000, 0x55d4c8400000)]  # the heap; the others are small, file-backed or read-only
    small = large_anonymous_regions(MAPS, 4 << 20)
    assert small[1] == (0x7f0000200000, 0x7f0000a00000)  # trimmed inward to 2 MiB boundaries
    assert all(lo % HUGE_PAGE == 0 and hi % HUGE_PAGE == 0 for lo, hi in small)


def thp_available() -> bool:
    try:
        enabled = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    return "[never]" not in enabled and (major, minor) >= (6, 1)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not thp_available(),
                    reason="needs Linux 6.1+ (MADV_COLLAPSE) with transparent huge pages")
def test_a_cpu_session_puts_its_weights_on_huge_pages(smollm_build):
    """In a fresh process: in this one, earlier tests' freed huge pages may be reused by the new session's
    weights, which then add less than their size to AnonHugePages (seen in the whole suite: 60 of ~100 MiB)."""
    code = f"""
def anon_huge_kib():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("AnonHugePages:"))
before = anon_huge_kib()
from llm_runtime import LLM
llm = LLM({str(smollm_build("int4"))!r})  # held while measured
print(anon_huge_kib() - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) >= 64 << 10  # most of the ~100 MiB of prepacked int4 weights
