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


def packed(pictures: Sequence[np.ndarray], dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Pictures of several sizes as (shapes [T, dims], all their pixels one after another)."""
    pictures = [np.asarray(p, np.uint8) for p in pictures]
    return (np.array([p.shape for p in pictures], np.int64).reshape(-1, dims),
            np.concatenate([p.ravel() for p in pictures]) if pictures else np.zeros(0, np.uint8))


def unpacked(shapes: np.ndarray, pixels: np.ndarray, count: int) -> list[np.ndarray]:
    """`packed`'s pictures back; ValueError where shapes and pixels disagree, or there are
    neither none nor `count` of them."""
    if len(shapes) not in (0, count) or (shapes < 0).any():
        raise ValueError("pictures of another count")
    sizes = shapes.prod(axis=1) if len(shapes) else np.zeros(0, np.int64)
    if int(sizes.sum()) != pixels.size:
        raise ValueError("pictures of other sizes")
    return [p.reshape(s) for p, s in zip(np.split(pixels, np.cumsum(sizes)[:-1]), shapes)] if len(shapes) else []


def save(index: LeakIndex, path: Path) -> None:
    """Writes `index` to `path` whole or not at all (a temporary file renamed into place)."""
    import faiss

    grey_shapes, grey_pixels = packed(index.greys, 2)
    colour_shapes, colour_pixels = packed(index.colours, 3)
    arrays = {
        "vectors": index.embeddings,
        "owners": index.owners,
        "views": np.array([[*v.box, v.angle, float(v.mirror)] for v in index.views], np.float64).reshape(-1, 6),
        "grey_shapes": grey_shapes, "grey_pixels": grey_pixels,
        "colour_shapes": colour_shapes, "colour_pixels": colour_pixels,
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
            a = {k: z[k] for k in ("vectors", "owners", "views", "grey_shapes", "grey_pixels",
                                   "colour_shapes", "colour_pixels", "hash_index")}
        index = faiss.deserialize_index_binary(np.ascontiguousarray(a["hash_index"], np.uint8))
        vectors, owners, views = a["vectors"], a["owners"].astype(np.int64), a["views"]
        greys = unpacked(a["grey_shapes"], a["grey_pixels"], len(vectors))
        colours = unpacked(a["colour_shapes"], a["colour_pixels"], len(vectors))
        whole = (vectors.ndim == 2 and len(vectors) > 0 and index.d == decontam.HASH_BITS
                 and index.ntotal == len(owners) == len(views) and views.shape[1:] == (6,)
                 and (not len(owners) or (owners.min() >= 0 and owners.max() < len(vectors)))
                 and (len(greys) or not len(owners)) and all(c.shape[-1:] == (3,) for c in colours))
        if not whole:
            raise ValueError("its parts do not agree")
    except Exception as e:  # (truncated, edited, another layout: built again)
        log.warning("leak index %s not read back (%s): building it again", path, e)
        return None
    if isinstance(index, faiss.IndexBinaryIVF):
        index.nprobe = decontam.IVF_PROBE
    return LeakIndex(vectors.astype(np.float32), np.zeros((0, HASH_BYTES), np.uint8), owners,
                     [View(tuple(float(x) for x in row[:4]), float(row[4]), bool(row[5])) for row in views],
                     greys, colours, hash_index=index)


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
