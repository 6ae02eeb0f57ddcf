"""file:// URLs of the corpus engine (explorer/crawl/localfile.py): only regular files, under the byte
cap, from under the corpus root unless the user opts in; everything else an outcome."""
import os
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from explorer.crawl.localfile import read_file_url, read_regular
from explorer.records import UrlOutcome

CAP = 1_000
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIFOs, /dev and /proc as on Linux")]


@pytest.fixture
def tree(tmp_path) -> tuple[Path, Path]:
    """root/{sub/in.jpg, link_out -> outside, link_in -> sub}, outside/secret.jpg."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "in.jpg").write_bytes(b"inside")
    (outside / "secret.jpg").write_bytes(b"secret")
    (root / "link_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in").symlink_to(root / "sub", target_is_directory=True)
    return root, outside


def unblock_fifo(fifo: Path) -> None:
    """Give a reader stuck opening `fifo` (a regression) a writer, so the test ends anyway."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: nobody is reading it, as it should be
        pass


def test_any_path_spelling_is_read_only_inside_the_root(tree):
    """Absolute paths, `..` and `.` segments and symlinks in any order: the body comes back iff
    the resolved file is under the root; outside it, forbidden_path unless allowed."""
    root, _ = tree
    segment = st.sampled_from(["..", ".", "sub", "link_out", "link_in", "outside", "root", "nope"])

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.lists(segment, max_size=6), st.sampled_from(["in.jpg", "secret.jpg"]), st.booleans())
    def check(segments, name, allow_outside):
        path = Path(root, *segments, name)
        result = read_file_url(path.as_uri(), root, CAP, allow_outside)
        real = Path(os.path.realpath(path))
        inside = real.is_relative_to(root)
        if real.is_file() and (inside or allow_outside):
            assert result.body == real.read_bytes() and result.outcome is None
        else:
            assert result.body is None and result.reason
            expected = UrlOutcome.FORBIDDEN_PATH if not inside and not allow_outside else UrlOutcome.HTTP_ERROR
            assert result.outcome == expected, (path, result)

    check()


def test_things_that_are_not_regular_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.jpg"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    try:
        for path, kind in [(Path("/dev/zero"), "a character device"), (fifo, "a FIFO"),
                           (tmp_path, "a folder"), (sock_path, "a socket")]:
            for root in (path.parent, Path("/")):  # inside its root, or outside with the opt-in
                result = read_file_url(path.as_uri(), root, CAP, allow_outside=root == Path("/"))
                assert result.outcome == UrlOutcome.FORBIDDEN_PATH and result.body is None
                assert result.reason == f"{path} is {kind}, not a regular file"
    finally:
        listener.close()
        unblock_fifo(fifo)


def test_byte_cap_counts_what_is_read_not_what_stat_says(tmp_path):
    (tmp_path / "exact.jpg").write_bytes(b"x" * CAP)
    (tmp_path / "over.jpg").write_bytes(b"x" * (CAP + 1))
    assert read_file_url((tmp_path / "exact.jpg").as_uri(), tmp_path, CAP).body == b"x" * CAP
    over = read_file_url((tmp_path / "over.jpg").as_uri(), tmp_path, CAP)
    assert over.outcome == UrlOutcome.TOO_LARGE and str(CAP) in over.reason
    # /proc files say st_size 0 and hold more: the read goes on, to the cap and no further
    status = Path(f"/proc/{os.getpid()}/status")
    assert status.stat().st_size == 0
    assert read_file_url(status.as_uri(), Path("/proc"), 10).outcome == UrlOutcome.TOO_LARGE
    assert b"Pid:" in read_file_url(status.as_uri(), Path("/proc"), 100_000).body


def test_a_symlink_put_in_after_resolving_is_not_followed(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    (tmp_path / "swapped.jpg").symlink_to(tmp_path / "secret.jpg")
    assert read_regular(tmp_path / "swapped.jpg", CAP) == (
        UrlOutcome.FORBIDDEN_PATH, f"{tmp_path / 'swapped.jpg'} is a symlink, not a regular file")


@pytest.mark.parametrize("url, why", [
    ("file://elsewhere/etc/hostname", "not a local, absolute file:// URL"),
    ("file:relative/a.jpg", "not a local, absolute file:// URL"),
])
def test_urls_that_name_no_local_absolute_path_are_bad_urls(tmp_path, url, why):
    result = read_file_url(url, tmp_path, CAP, allow_outside=True)
    assert (result.outcome, result.reason) == (UrlOutcome.BAD_URL, why)


def test_no_corpus_no_files(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"a")
    result = read_file_url((tmp_path / "a.jpg").as_uri(), None, CAP, allow_outside=True)
    assert result.outcome == UrlOutcome.BAD_URL and result.body is None
