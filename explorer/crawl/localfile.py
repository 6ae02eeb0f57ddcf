"""file:// URLs of the local corpus engine, read under the same kind of guards as the web.

A corpus table can name any path. Read naively, `/dev/zero` reads until memory runs out, a FIFO
blocks its thread forever, and an absolute or `../` path pulls any file on the disk into the
training set. So a file:// URL is read only when it is a regular file, no bigger than the byte
cap, under the corpus root (symlinks resolved) unless the user opted in with
`crawl.corpus_allow_outside`. Everything else is a FetchResult with an outcome and a reason.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from explorer.records import FetchResult, UrlOutcome

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
              (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"))

Refusal = tuple[UrlOutcome, str]


def local_path(url: str) -> Path | None:
    """The absolute path a file:// URL names, or None when it names none (another host, a
    relative path: those would depend on the network or on the current folder)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None
    path = Path(url2pathname(parts.path))
    return path if path.is_absolute() else None


def resolve(path: Path) -> Path:
    """`path` with `..` and every symlink resolved (missing parts kept as they are)."""
    return Path(os.path.realpath(path))


def outside_reason(path: Path, real: Path, root: Path) -> str:
    """Why `path` (resolved: `real`) is not part of the corpus at `root`; "" when it is."""
    real_root = resolve(root)
    if real.is_relative_to(real_root):
        return ""
    shown = str(path) if real == path else f"{path} (-> {real})"
    return f"{shown} is outside the corpus root {real_root} (--set crawl.corpus_allow_outside=true reads it)"


def kind_of(mode: int) -> str:
    """What a file that is not regular is ("a FIFO", "a character device", ...), for a reason."""
    return next((name for is_kind, name in FILE_KINDS if is_kind(mode)), "not a regular file")


def read_regular(path: Path, max_bytes: int) -> bytes | Refusal:
    """The bytes of the regular file at `path` (resolved: no symlinks), at most `max_bytes`; else
    (outcome, reason).

    stat before opening: opening a device can itself act (a watchdog arms, a tape rewinds).
    O_NONBLOCK so that a FIFO swapped in after that stat cannot block the open, O_NOFOLLOW so
    that a symlink swapped in is not followed, and fstat of the open file decides. st_size is
    only a hint: a file can grow after fstat, so the read stops one byte past the cap.
    """
    def not_regular(mode: int) -> Refusal:
        return UrlOutcome.FORBIDDEN_PATH, f"{path} is {kind_of(mode)}, not a regular file"

    too_large = UrlOutcome.TOO_LARGE, f"{path}: file over {max_bytes} bytes"
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            return not_regular(mode)
        fd = os.open(path, OPEN_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink put there after the resolve
            return not_regular(stat.S_IFLNK)
        return UrlOutcome.HTTP_ERROR, f"{type(e).__name__}: {e}"[:300]
    with open(fd, "rb", closefd=True) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return not_regular(st.st_mode)
        if st.st_size > max_bytes:
            return too_large
        try:
            body = f.read(st.st_size + 1)
            if len(body) > st.st_size:  # it grew since fstat (or is sized 0, as /proc files are)
                body += f.read(max_bytes + 1 - len(body))
        except OSError as e:
            return UrlOutcome.HTTP_ERROR, f"{type(e).__name__}: {e}"[:300]
    return too_large if len(body) > max_bytes else body


def read_file_url(url: str, root: Path | None, max_bytes: int, allow_outside: bool = False) -> FetchResult:
    """A file:// URL of the corpus engine whose root is `root` (None: no corpus engine, so no
    files) -> FetchResult. Blocking (disk reads): run it in a thread."""
    if root is None:
        return FetchResult(url=url, outcome=UrlOutcome.BAD_URL, reason="file:// URLs are read for a corpus engine only")
    path = local_path(url)
    if path is None:
        return FetchResult(url=url, outcome=UrlOutcome.BAD_URL, reason="not a local, absolute file:// URL")
    real = resolve(path)
    if not allow_outside and (why := outside_reason(path, real, root)):
        return FetchResult(url=url, outcome=UrlOutcome.FORBIDDEN_PATH, reason=why)
    body = read_regular(real, max_bytes)
    if isinstance(body, tuple):
        return FetchResult(url=url, outcome=body[0], reason=body[1])
    return FetchResult(url=url, body=body, status=200, final_url=url)
