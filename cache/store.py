"""Content-addressed image files: `DIR/images/ab/<sha256>.jpg`, written tmp + rename."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from cache.paths import IMAGES_DIR, image_relpath


class StoreError(OSError):
    """An image could not be written to the cache (read-only directory, I/O error, ...)."""


class CacheFull(StoreError):
    """The cache size cap is reached, or the disk is full."""


class ImageStore:
    """Image files named by the sha256 of their bytes, under a size cap.

    The cap holds for the folder, whoever wrote its files: several runs may share one store
    (each with its own database), so `used_bytes` starts from the files themselves (one
    `scandir` walk on open, seconds for millions of files) unless the caller gives it.
    Files another process writes while this one runs are counted at its next open.
    """

    def __init__(self, root: str | Path, max_bytes: int, used_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.images = self.root / IMAGES_DIR
        self.images.mkdir(parents=True, exist_ok=True)
        for i in range(256):  # every prefix folder once, so a write is open + write + rename
            (self.images / f"{i:02x}").mkdir(exist_ok=True)
        self.max_bytes = max_bytes
        self.used_bytes = self.measure_bytes() if used_bytes is None else used_bytes

    def measure_bytes(self) -> int:
        """Bytes of every stored image file (temp files of interrupted writes are not images)."""
        total = 0
        with os.scandir(self.images) as folders:
            for folder in folders:
                if not folder.is_dir():
                    continue
                with os.scandir(folder.path) as entries:
                    for entry in entries:
                        if entry.name.endswith(".jpg"):
                            try:
                                total += entry.stat().st_size
                            except FileNotFoundError:  # removed meanwhile (cache verify --fix)
                                pass
        return total

    def path(self, sha256: str) -> Path:
        return self.root / image_relpath(sha256)

    def relpath(self, sha256: str) -> str:
        return image_relpath(sha256)

    def has(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def put(self, sha256: str, data: bytes) -> Path:
        """Write `data` atomically (a crash leaves no file or the whole file); CacheFull if over the cap."""
        path = self.path(sha256)
        if path.exists():  # left by a run killed before its DB commit: same bytes, counted once
            return path
        self._check_cap(len(data))
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise CacheFull(e.errno, f"disk full under {self.root}: {e.strerror} "
                                "(free space, then resume)") from e
            raise StoreError(e.errno, f"cannot write to the cache {self.root}: {e.strerror}") from e
        self.used_bytes += len(data)
        return path

    def claim(self, sha256: str, data: bytes) -> Path:
        """Count under the cap a file that another process wrote here for this writer (`put`
        there, named by the same sha256), as if `put` had written it: CacheFull over the cap, the
        file then removed; written now if it is gone."""
        path = self.path(sha256)
        if not path.exists():
            return self.put(sha256, data)
        try:
            self._check_cap(len(data))
        except CacheFull:
            self.discard(sha256)
            raise
        self.used_bytes += len(data)
        return path

    def discard(self, sha256: str) -> None:
        """Remove a file written for an image that was then not kept (never one that a database
        holds: the caller checks)."""
        self.path(sha256).unlink(missing_ok=True)

    def _check_cap(self, nbytes: int) -> None:
        if self.used_bytes + nbytes > self.max_bytes:
            raise CacheFull(f"the cache cap of {self.max_bytes} bytes is reached in {self.root} "
                            "(raise crawl.cache_max_bytes or free space, then resume)")

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()
