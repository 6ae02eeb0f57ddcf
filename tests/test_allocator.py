"""explorer/crawl/allocator.py: freed image-sized buffers are reused, not faulted in again."""
import subprocess
import sys

import pytest

from explorer.crawl.allocator import keep_freed_memory

CYCLES = """
import resource, sys
from explorer.crawl.allocator import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def one_image():  # the buffers one crawled image passes through (decoded, resizer in and out), all touched
    bufs = [bytearray(n) for n in (600_000, 600_000, 400_000, 400_000)]
    del bufs
one_image()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    one_image()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, check=True, timeout=60)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_image_buffers_are_reused_not_faulted_in_again():
    if not keep_freed_memory():
        pytest.skip("this C library has no mallopt")
    default, kept = page_faults("default"), page_faults("kept")
    assert default > 10_000  # (100 images x ~500 fresh pages: what the crawl's workers paid before)
    assert kept < default / 20
