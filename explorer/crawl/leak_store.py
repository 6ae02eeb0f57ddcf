"""The leak index kept on disk: a run's target test images are turned into a `LeakIndex` once,
not at every start, resume and `explore fetch --exclude` (their views' copy hashes and the
inverted lists' training cost seconds per hundred test images).

A stored index is found by a key over what it is a function of: the test images' bytes in order,
whether copy hashes were made, the source of the code that makes them (decontam.py, images.py)
and the versions of the libraries it calls. Anything else changed gives another key, so a stored
index is never used for other images or by other code. A file that cannot be read back whole
(truncated, edited, of another layout) is left aside and the index built again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from explorer.crawl import decontam
from explorer.crawl.decontam import HASH_BYTES, LeakIndex, View

log = logging.getLogger(__name__)

LAYOUT = 1          # of the stored file; a change gives every index a new key
SUBDIR = "leak"     # under the cache directory


def leak_key(paths: Sequence[str | Path], hashes: bool) -> str:
    """The hex key of the LeakIndex of the files at `paths` (in order)."""
    import faiss
    import PIL

    from explorer.crawl import images

    h = hashlib.sha256()
    h.update(f"layout {LAYOUT} hashes {hashes} numpy {np.__version__} pillow {PIL.__version__} "
             f"faiss {faiss.__version__}\n".encode())
    for module in (decontam, images):
        h.update(Path(module.__file__).read_bytes())
    for path in paths:
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()


def save(index: LeakIndex, path: Path) -> None:
    """Writes `index` to `path` whole or not at all (a temporary file renamed into place)."""
    import faiss

    greys = [np.asarray(g, np.uint8) for g in index.greys]
    arrays = {
        "vectors": index.embeddings,
        "owners": index.owners,
        "views": np.array([[*v.box, v.angle, float(v.mirror)] for v in index.views], np.float64).reshape(-1, 6),
        "grey_shapes": np.array([g.shape for g in greys], np.int64).reshape(-1, 2),
        "grey_pixels": np.concatenate([g.ravel() for g in greys]) if greys else np.zeros(0, np.uint8),
        "hash_index": faiss.serialize_index_binary(index.hashes),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> LeakIndex | None:
    """The LeakIndex stored at `path`, or None where there is none or it is not whole."""
    import faiss

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in ("vectors", "owners", "views", "grey_shapes", "grey_pixels", "hash_index")}
        index = faiss.deserialize_index_binary(np.ascontiguousarray(a["hash_index"], np.uint8))
        vectors, owners, views = a["vectors"], a["owners"].astype(np.int64), a["views"]
        shapes = a["grey_shapes"]
        sizes = shapes.prod(axis=1) if len(shapes) else np.zeros(0, np.int64)
        whole = (vectors.ndim == 2 and len(vectors) > 0 and index.d == decontam.HASH_BITS
                 and index.ntotal == len(owners) == len(views) and views.shape[1:] == (6,)
                 and (not len(owners) or (owners.min() >= 0 and owners.max() < len(vectors)))
                 and len(shapes) in (0, len(vectors)) and (shapes >= 0).all()
                 and int(sizes.sum()) == a["grey_pixels"].size and (len(shapes) or not len(owners)))
        if not whole:
            raise ValueError("its parts do not agree")
    except Exception as e:  # (truncated, edited, another layout: built again)
        log.warning("leak index %s not read back (%s): building it again", path, e)
        return None
    if isinstance(index, faiss.IndexBinaryIVF):
        index.nprobe = decontam.IVF_PROBE
    greys = np.split(a["grey_pixels"], np.cumsum(sizes)[:-1]) if len(shapes) else []
    return LeakIndex(vectors.astype(np.float32), np.zeros((0, HASH_BYTES), np.uint8), owners,
                     [View(tuple(float(x) for x in row[:4]), float(row[4]), bool(row[5])) for row in views],
                     [g.reshape(s) for g, s in zip(greys, shapes)], hash_index=index)


def stored_leak_index(paths: Sequence[str | Path], build: Callable[[], LeakIndex], directory: Path,
                      hashes: bool) -> LeakIndex:
    """The LeakIndex of the test images at `paths`: read from `directory` where it was stored by
    an earlier call, else `build()` and stored there (a directory that cannot be written only
    costs the next start its build)."""
    path = Path(directory) / SUBDIR / f"{leak_key(paths, hashes)}.npz"
    found = load(path)
    if found is not None:
        return found
    index = build()
    try:
        save(index, path)
    except OSError as e:
        log.warning("leak index not stored at %s (%s): the next start builds it again", path, e)
    return index
